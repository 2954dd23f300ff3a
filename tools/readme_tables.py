"""Regenerate README's result tables (`<!-- table: <experiment> -->` blocks) from results/<experiment>/results.json.

    python tools/readme_tables.py            # rewrite them; tests/test_readme_tables.py checks they match
"""
from pathlib import Path

from dmdjax import report

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    changed = report.update_readme(REPO / "README.md", REPO / "results")
    print("updated:", ", ".join(changed) or "nothing (README's tables match results/)")
