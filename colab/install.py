"""Install dmdjax from its source folder into a running notebook runtime (Colab, Kaggle, a Jupyter server) without
replacing the runtime's own packages. The notebooks' install cell runs it; by hand:

    python /content/dmdjax/colab/install.py /content/dmdjax [tfds]

Every package of `RUNTIME` that the runtime has is pinned at its installed version (runtime-constraints.txt in
the working directory), so pip keeps it, or stops with a conflict instead of replacing it. The one exception is a
package below dmdjax's floor (pyproject.toml): pip installs a version dmdjax supports, and one line says so.
Standard library and pip only: it runs before dmdjax and its dependencies import.
"""
from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:                      # a bare interpreter: pip's own copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

__all__ = ["RUNTIME", "requirements", "plan", "main"]

# What a notebook runtime ships and builds against: never upgraded or downgraded unless below dmdjax's floor.
RUNTIME = ("jax", "jaxlib", "libtpu", "libtpu-nightly", "jax-cuda12-plugin", "jax-cuda12-pjrt", "flax", "optax",
           "orbax-checkpoint", "chex", "protobuf", "numpy", "tensorflow", "tensorflow-cpu", "tf-keras", "keras")
CONSTRAINTS = "runtime-constraints.txt"


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(source: str | Path, extras: tuple[str, ...] = ()) -> list[Requirement]:
    """dmdjax's requirements in `source`/pyproject.toml: the core and the given extras (nested extras followed)."""
    project = tomllib.loads((Path(source) / "pyproject.toml").read_text())["project"]
    optional, seen, todo, out = project.get("optional-dependencies", {}), set(), list(extras), []
    for text in project["dependencies"]:
        out.append(Requirement(text))
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional.get(extra, []):
            req = Requirement(text)
            if _name(req.name) == _name(project["name"]):
                todo.extend(req.extras)
            else:
                out.append(req)
    return [r for r in out if r.marker is None or r.marker.evaluate({"extra": ""})]


def plan(reqs: list[Requirement], installed: dict[str, str]) -> tuple[list[str], list[str]]:
    """(pins, below): `name==version` for each installed runtime package that meets dmdjax's requirements, and
    one line for each that is below them (left free, so pip installs a supported version)."""
    wanted = {}
    for req in reqs:
        wanted.setdefault(_name(req.name), []).append(req)
    pins, below = [], []
    for dist in RUNTIME:
        version = installed.get(_name(dist))
        if version is None:
            continue
        unmet = [r for r in wanted.get(_name(dist), []) if not r.specifier.contains(Version(version), prereleases=True)]
        if unmet:
            below.append(f"{dist} {version} is below dmdjax's floor ({unmet[0]}): pip installs a supported version; "
                         f"restart the session after this cell (Runtime > Restart session)")
        else:
            pins.append(f"{dist}=={version}")
    return pins, below


def _installed() -> dict[str, str]:
    found = {}
    for dist in RUNTIME:
        try:
            found[_name(dist)] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or not (Path(argv[1]) / "pyproject.toml").is_file():
        print(f"usage: python install.py SOURCE_DIR [EXTRAS]  (SOURCE_DIR: dmdjax's folder, with pyproject.toml; "
              f"got {argv[1:]})", file=sys.stderr)
        return 2
    source, extras = str(Path(argv[1]).resolve()), (argv[2] if len(argv) == 3 else "")
    names = tuple(e.strip() for e in extras.strip("[]").split(",") if e.strip())
    pins, below = plan(requirements(source, names), _installed())
    Path(CONSTRAINTS).write_text("\n".join(pins) + "\n")
    print("keeping the runtime's", ", ".join(pins) or "(none of them installed)")
    for line in below:
        print(line)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", CONSTRAINTS, source + extras])
    if pip.returncode:
        print("pip could not install dmdjax beside this runtime's own packages (its message is above): install it "
              "into a fresh virtual environment, or drop the conflicting pin from " + CONSTRAINTS, file=sys.stderr)
    return pip.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv))
