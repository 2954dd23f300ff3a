"""benchmarks/accelerator.py at a tiny size on CPU: every row measured, the MFU arithmetic, the time budget."""
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("accelerator", REPO / "benchmarks" / "accelerator.py")
accelerator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(accelerator)


@pytest.mark.slow
def test_tiny_run_measures_every_program_and_mfu(tmp_path):
    out = accelerator.main(["--net=tiny", "--batches=2", "--dtypes=bfloat16", "--programs=teacher,phi8",
                            "--phi_n=4", "--phi_batch=2", "--repeats=2", "--peak_tflops=0.5",
                            f"--out={tmp_path / 'acc.json'}"])
    assert json.loads((tmp_path / "acc.json").read_text()) == json.loads(json.dumps(out))
    rows = {r["program"]: r for r in out["rows"]}
    assert set(rows) == {"teacher", "phi8"}
    for r in rows.values():
        assert r["compile_s"] > 0 and r["seconds"] > 0 and r["flops"] > 0 and len(r["times_s"]) == 2
        assert r["mfu"] == pytest.approx(r["tflops_per_s"] / 0.5)
    assert rows["teacher"]["tflops_per_s"] == pytest.approx(rows["teacher"]["flops"] / rows["teacher"]["seconds"] / 1e12)
    assert rows["teacher"]["items_per_s"] == pytest.approx(2 / rows["teacher"]["seconds"])
    # Phi_8 on 4 noises is 2 chunk calls per measurement: 15 network evaluations each, more than a train step's 1
    assert rows["phi8"]["items_per_s"] == pytest.approx(4 / rows["phi8"]["seconds"]) and rows["phi8"]["chunk"] == 2
    assert rows["phi8"]["flops"] > rows["teacher"]["flops"] / 3


def test_budget_skips_rows_and_peaks_are_looked_up():
    out = accelerator.main(["--net=tiny", "--batches=2", "--dtypes=float32", "--programs=fake", "--budget_s=0"])
    assert out["rows"] == [{"net": "tiny", "program": "fake", "batch": 2, "dtype": "float32",
                            "skipped": "over --budget_s=0"}]
    assert accelerator.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert accelerator.peak_tflops("TPU v5 lite", "float32") == 197.0
    assert accelerator.peak_tflops("cpu", "float32") is None
