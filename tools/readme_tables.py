"""Regenerate README's result tables (`<!-- table: <experiment> -->` blocks) from results/<experiment>/results.json,
and the verdict page results/VERDICTS.md (`dmdjax.verdict.claims_page`).

    python tools/readme_tables.py            # rewrite them; tests/test_readme_tables.py, test_verdict.py check them
"""
from pathlib import Path

from dmdjax import files, report, verdict

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    changed = report.update_readme(REPO / "README.md", REPO / "results")
    print("updated:", ", ".join(changed) or "nothing (README's tables match results/)")
    files.write_text(REPO / "results" / "VERDICTS.md", verdict.claims_page(REPO / "results"))
