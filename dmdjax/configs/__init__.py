"""Experiment configs as plain Python: one module per script in experiments/, each with
`get_config(preset, **options) -> Config` (the resolved config of that script before its command-line flags)
and `DERIVED`, the fields it computes from others. This package holds their shared building blocks.

Presets: `paper` follows the paper's App. D, `cpu` is sized to show the phenomenon on a 2-core CPU.
Derived fields are computed in one place, `resolve`: at the end of every `get_config`, and again by
`cli.configure` after the command line's flags and `--set`s (a field given explicitly is kept).
`apply_sets` applies `--set KEY=VALUE` (dotted keys, values typed from the config; `ConfigError` names the key).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Any, Callable, Mapping, Sequence

from dmdjax.config import Config
from dmdjax.distill import DistillConfig
from dmdjax.record import RecordConfig
from dmdjax.teacher import TeacherConfig

PRESETS = ("cpu", "paper")


class ConfigError(ValueError):
    """A problem with the command line or the config it gives, found before any work starts."""


def check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")


def override(cfg: Config, **changes) -> Config:
    """Replace fields, with dotted names for nested ones: override(cfg, **{"teacher.steps": 100})."""
    top, nested = {}, {}
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".", 1)
            nested.setdefault(outer, {})[inner] = value
        else:
            top[key] = value
    for outer, fields in nested.items():
        top[outer] = dataclasses.replace(getattr(cfg, outer), **fields)
    return dataclasses.replace(cfg, **top)


def get(cfg, key: str):
    """The value of a dotted field: get(cfg, "distill.lr_gen")."""
    for part in key.split("."):
        cfg = cfg[part] if isinstance(cfg, dict) else getattr(cfg, part)
    return cfg


# ----------------------------------------------------------------------------------------------------------
# Derived fields: {dotted key: cfg -> value}, computed by `resolve`.

Rules = Mapping[str, Callable[[Config], Any]]


def resolve(cfg: Config, derived: Rules, explicit=()) -> Config:
    """cfg with every field of `derived` recomputed from cfg's other fields, except the keys in `explicit`
    (given on the command line): `--set distill.lr_gen=1e-5` moves `record.min_iterations` to 10,000."""
    changes = {key: rule(cfg) for key, rule in derived.items() if key not in explicit}
    return override(cfg, **changes) if changes else cfg


PAPER_LR_SUM = 50_000 * 2e-6   # the paper's students: 50,000 DMD iterations at lr 2e-6


def judge_after(lr: float) -> int:
    """The DMD iteration at which a student's learning rates add up to the paper's (PAPER_LR_SUM / lr)."""
    return round(PAPER_LR_SUM / lr)


# The stop rule judges a student only after the paper's sum of learning rates (its early copying phase can look
# converged for hundreds of iterations; docs/design.md).
JUDGED: Rules = {"record.min_iterations": lambda cfg: judge_after(cfg.distill.lr_gen)}


def snapshot_steps(teacher_steps: int, divisors=(8, 4, 2, 1)) -> tuple[int, ...]:
    """T / d for each divisor d of a teacher of T steps: T/8, T/4, T/2, T by default."""
    return tuple(sorted({teacher_steps // d for d in divisors} - {0}))


def snapshots_at(*divisors: int) -> Rules:
    """`distill_snapshots` = T / d for each divisor d, T = teacher.steps (`snapshot_steps`)."""
    return {"distill_snapshots": lambda cfg: snapshot_steps(cfg.teacher.steps, divisors)}


FINAL_TEACHER: Rules = {"distill_snapshots": lambda cfg: (cfg.teacher.steps,)}


# ----------------------------------------------------------------------------------------------------------
# Shared settings.

# Teacher EMA as EDM's training loop keeps it (`--ema` 0.5 Mimg, ramp-up 0.05; REFERENCE 2.2). Every preset that
# trains a teacher keeps it and distills it; `--set teacher.ema_halflife_kimg=0`: the raw weights.
EDM_EMA = {"teacher.ema_halflife_kimg": 500.0, "teacher.ema_rampup_ratio": 0.05}
EMA = dict(ema_halflife_kimg=EDM_EMA["teacher.ema_halflife_kimg"], ema_rampup_ratio=EDM_EMA["teacher.ema_rampup_ratio"])


def mlp_features(cfg: Config) -> tuple[int, ...]:
    """The hidden-layer widths of cfg's MLP (`nets.mlp.FEATURES` unless net_kwargs gives them)."""
    from dmdjax.nets.mlp import FEATURES
    return tuple(cfg.net_kwargs.get("features", FEATURES))


def with_width(cfg: Config, width: int | None) -> Config:
    """The MLP with `width` units in each hidden layer (teacher, fake score and student alike); None: cfg."""
    if width is None:
        return cfg
    return override(cfg, net_kwargs={**cfg.net_kwargs, "features": (int(width),) * len(mlp_features(cfg))})


# ----------------------------------------------------------------------------------------------------------
# MNIST: the network and recipes every image experiment starts from.

MNIST_CPU_NET = dict(img_resolution=16, in_channels=1, label_dim=0, model_channels=32, channel_mult=[1, 2],
                     channel_mult_emb=4, num_blocks=1, attn_resolutions=[8], dropout=0.0)
# The cpu convergence record: its evaluations cost at most 15 % of a student's wall time (docs/performance.md).
MNIST_CPU_RECORD = RecordConfig(eval_every=25, n=200)


def mnist(preset: str = "cpu", conditional: bool = False) -> Config:
    """MNIST (Sec. 3.4, 4.2, App. B/D): EDM's ADM UNet, batch 32, teacher Adam 2e-4 with EDM's EMA (`EMA`),
    distilled at its final step. Derived fields are left to the experiment (`resolve`).

    paper: the paper's UNet at 32x32 (`nets.adm.mnist_config`), teacher 8192 iterations, DMD at lr 2e-6 for
    50,000 iterations. cpu: MNIST average-pooled to 16x16, a small ADM (`MNIST_CPU_NET`), teacher 1024
    iterations, DMD at lr 1e-4 for 400 iterations.
    """
    check_preset(preset)
    from dmdjax.nets.adm import mnist_config
    label_dim = 10 if conditional else 0
    name = f"mnist-{'cond' if conditional else 'uncond'}-{preset}"
    if preset == "paper":
        net = {**mnist_config(), "label_dim": label_dim}
        teacher = TeacherConfig(steps=8192, batch=32, lr=2e-4, ckpt_every=512, chunk=1, **EMA)
        distill = DistillConfig(iterations=50_000, batch=32, lr_gen=2e-6, lr_fake=2e-6, ckpt_every=1000, chunk=5)
        return Config(name=name, dataset="mnist", net="adm", net_kwargs=net, teacher=teacher, distill=distill,
                      eval_ks=(1, 8, 32), eval_batch=250, record=RecordConfig(eval_every=1000, n=500))
    net = {**MNIST_CPU_NET, "label_dim": label_dim}
    teacher = TeacherConfig(steps=1024, batch=32, lr=2e-4, ckpt_every=128, chunk=1, **EMA)
    distill = DistillConfig(iterations=400, batch=32, lr_gen=1e-4, lr_fake=1e-4, warmup=100, ckpt_every=100, chunk=5)
    return Config(name=name, dataset="mnist", net="adm", net_kwargs=net, teacher=teacher, distill=distill,
                  eval_ks=(1, 8), figure_ks=(32,), eval_batch=500, record=MNIST_CPU_RECORD)


def study_datasets() -> tuple[str, ...]:
    """The data sets `study_base` has a student for: the toys and MNIST."""
    from dmdjax.data.toy import DATASETS
    return DATASETS + ("mnist",)


def study_base(preset: str, dataset: str, width: int | None = None) -> Config:
    """A study's student on `dataset` (the ablation's, the dynamics study's): the toy's own preset, its MLP `width`
    units wide (None: the preset's), or MNIST's (`mnist`), distilled at the final teacher step."""
    from dmdjax.data.toy import DATASETS
    if dataset not in study_datasets():
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(study_datasets())}")
    return with_width(toy.get_config(preset, dataset), width) if dataset in DATASETS else mnist(preset)


TREND_LR = 1e-4          # the teacher-length study's DMD learning rate (cpu; docs/notebook.md: the lr pilot)
TREND_ITERATIONS = 2000  # its most DMD iterations per student: lr x iterations = 2 x PAPER_LR_SUM


def study_protocol(cfg: Config, preset: str) -> Config:
    """The teacher-length study's distillation protocol on an image config: Phi_1/8/32 on all noises, the
    convergence record and its stop rule (`record.until_converged`); cpu: at most TREND_ITERATIONS DMD iterations
    at TREND_LR, checkpoints and records every 100 iterations on 200 noises; paper: the preset's lr and
    iterations, checkpoints every 1000."""
    if preset == "paper":
        changes = {"distill.ckpt_every": 1000}
    else:
        changes = {"distill.iterations": TREND_ITERATIONS, "distill.lr_gen": TREND_LR, "distill.lr_fake": TREND_LR,
                   "distill.ckpt_every": 100, "record.eval_every": 100, "record.n": 200}
    return override(cfg, eval_ks=(1, 8, 32), figure_ks=(), **{**changes, "record.until_converged": True})




# ----------------------------------------------------------------------------------------------------------
# --set KEY=VALUE: dotted fields, typed from the config (`cli`'s --set).

def _keys(obj, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config (dataclass fields, recursively; dict entries of dict fields)."""
    out = []
    items = ([(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj)
             else list(obj.items()))
    for name, value in items:
        out.append(prefix + name)
        if dataclasses.is_dataclass(value) or isinstance(value, dict):
            out += _keys(value, prefix + name + ".")
    return out


def _field_type(obj, name: str):
    if dataclasses.is_dataclass(obj):
        return typing.get_type_hints(type(obj)).get(name, type(getattr(obj, name)))
    return type(obj[name])


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _convert(text: str, kind) -> Any:
    """`text` as a value of type `kind` (bool, int, float, str, X | None, tuple[X, ...], list, dict)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(text, inner[0])
    if kind is bool:
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError("expected true or false")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            as_float = float(text)            # 5e4
            if not as_float.is_integer():
                raise
            return int(as_float)
    if kind is float:
        return float(text)
    if kind is str:
        return text
    if origin is tuple or kind is tuple:
        item = args[0] if args else int
        parts = json.loads(text) if text.strip().startswith("[") else [t for t in text.split(",") if t.strip()]
        return tuple(_convert(str(p), item) for p in parts)
    if origin in (list, dict) or kind in (list, dict):
        value = json.loads(text)
        want = origin or kind
        if not isinstance(value, want):
            raise ValueError(f"expected JSON {'[...]' if want is list else '{...}'}")
        return value
    raise ValueError(f"cannot set a field of type {kind}")


def _describe_type(kind) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(a) for a in args)
    if origin is tuple or kind is tuple:
        return "comma-separated " + (_describe_type(args[0]) if args else "values")
    return {bool: "true/false", int: "an integer", float: "a number", str: "text", type(None): "none",
            list: "a JSON list", dict: "a JSON object"}.get(kind, getattr(kind, "__name__", str(kind)))


def _replace(obj, parts: list[str], value):
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{head: _replace(getattr(obj, head), rest, value)})
    return {**obj, head: _replace(obj[head], rest, value)}


def apply_sets(cfg, assignments: Sequence[str]):
    """cfg with each `KEY=VALUE` applied in order. KEY is a dotted field name (`distill.lr_gen`,
    `net_kwargs.model_channels`); VALUE is converted to the field's type. Raises ConfigError naming the key and
    what it accepts (unknown key: the nearest known ones)."""
    for text in assignments:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE, got {text!r} (e.g. --set distill.lr_gen=3e-5)")
        known = _keys(cfg)
        if key not in known:
            near = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = (f"did you mean {' or '.join(near)}?" if near else
                    f"known top-level keys: {', '.join(k for k in known if '.' not in k)}")
            raise ConfigError(f"--set {text}: unknown config key {key!r}; {hint} (--print_config lists them)")
        parts = key.split(".")
        parent = cfg
        for p in parts[:-1]:
            parent = getattr(parent, p) if dataclasses.is_dataclass(parent) else parent[p]
        kind = _field_type(parent, parts[-1])
        if dataclasses.is_dataclass(getattr(parent, parts[-1], None) if dataclasses.is_dataclass(parent) else None):
            raise ConfigError(f"--set {text}: {key} is a group of fields; set one of them, e.g. {key}."
                              f"{dataclasses.fields(getattr(parent, parts[-1]))[0].name}=...")
        try:
            value = _convert(raw, kind)
        except (ValueError, json.JSONDecodeError):
            raise ConfigError(f"--set {text}: {key} takes {_describe_type(kind)}, got {raw!r}") from None
        try:
            cfg = _replace(cfg, parts, value)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"--set {text}: {e}") from None
    return cfg


# One module per experiment script (imported last: each builds on the blocks above).
from dmdjax.configs import (ablation, dimension_sweep, dynamics, imagenet64, manifold, mnist_cond,  # noqa: E402
                            mnist_regime, mnist_trend, mnist_trend_cond, mnist_uncond, toy)
