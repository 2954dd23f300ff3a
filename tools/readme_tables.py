"""Regenerate the result tables (`<!-- table: <experiment> -->` blocks) of README.md and of every results page
(results/<experiment>/README.md) from results/<experiment>/results.json, README's results at a glance
(`<!-- table: claims -->`, `dmdjax.verdict.glance_table`) and the verdict page results/VERDICTS.md
(`dmdjax.verdict.claims_page`).

    python tools/readme_tables.py            # rewrite them; tests/test_readme_tables.py, test_verdict.py check them
"""
from pathlib import Path

from dmdjax import files, report, verdict

REPO = Path(__file__).resolve().parents[1]
GENERATED = {"claims": verdict.glance_table}


def pages() -> list[Path]:
    """README.md and every results page."""
    return [REPO / "README.md", *sorted((REPO / "results").glob("*/README.md"))]


if __name__ == "__main__":
    for page in pages():
        changed = report.update_readme(page, REPO / "results", GENERATED)
        if changed:
            print(f"{page.relative_to(REPO)}: updated {', '.join(changed)}")
    files.write_text(REPO / "results" / "VERDICTS.md", verdict.claims_page(REPO / "results"))
