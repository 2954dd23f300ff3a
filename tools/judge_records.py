"""Judge every committed student record (results/*/student_*/record.jsonl) by the current stop rule, with the
criteria stored in its run's config: the stored verdict, today's, and the steps at which the kappa-drift
criterion alone holds (`dmdjax.record`).

    python tools/judge_records.py
"""
import json
from pathlib import Path

from dmdjax import record

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    for results in sorted((REPO / "results").glob("*/results.json")):
        summary = json.loads(results.read_text())
        fields = record.RecordConfig.__dataclass_fields__
        cfg = record.RecordConfig(**{k: v for k, v in summary["config"]["record"].items() if k in fields})
        for path in sorted(results.parent.glob("student_*/record.jsonl"), key=lambda p: int(p.parent.name[8:])):
            rows = record.read_record(path)
            stored = json.loads((path.parent / "results.json").read_text()).get("converged")
            drift_ok = [r["step"] for i, r in enumerate(rows)
                        if (d := record.kappa_drift(rows[:i + 1])) is not None
                        and cfg.drift_within(d, r["kappa"])]
            print(f"{results.parent.name}/{path.parent.name}: stored {stored}, now "
                  f"{record.convergence(rows, cfg)['converged']} (last step {rows[-1]['step']}); "
                  f"drift criterion holds at {drift_ok}")


if __name__ == "__main__":
    main()
