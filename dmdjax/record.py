"""Convergence record of a distillation: every `eval_every` iterations the generator G_t is evaluated on a fixed
set of `n` noises against the teacher's Phi_K and Phi_1 on the same noises (computed once per student), and an
optional stop rule ends the student when it has converged.

One row of `student_<s>/record.jsonl` per evaluated iteration t, the multiples of eval_every (t = 0: G at
initialisation, ~Phi_1):
    delta_e, delta_e_ci        Delta_E(Phi_K, G_t) (Eq. 6) and its half-sample interval [lo, hi]
    kappa, kappa_ci            Delta_E / Delta_E_null (`metrics.copying_index`); kappa_reliable, delta_e_null
    w2, w2_floor, fit_ratio    the fit: W2(G_t first half, Phi_K second half) against Phi_K's own floor
                               W2(Phi_K first half, Phi_K second half); fit_ratio = w2 / w2_floor
    spread_ratio               mean ||G_t - mean G_t||^2 / mean ||Phi_K - mean Phi_K||^2: 1 for a sample as
                               spread as the teacher's, ~0 for one collapsed towards its mean. In high dimension
                               with small n such a collapsed sample can have fit_ratio < 1 (two independent halves
                               of Phi_K are farther apart than either is from the mean), so the fit alone cannot
                               rule collapse out
    fit_change, kappa_change,  |w2_t - w2_{t-pk}| / w2_t, |kappa_t - kappa_{t-pk}| and |covered_t - covered_{t-pk}|
    covered_change             over the stop rule's window of p = `patience` evaluations (k = eval_every; null in
                               the first p rows)
    covered                    1 - mean_i ||G_t(z_i) - Phi_K(z_i)|| / mean_i ||Phi_1(z_i) - Phi_K(z_i)||: the
                               fraction of the mean distance from Phi_1 to Phi_K the student has covered (a ratio
                               of means over the noises, so single noises with Phi_1 ~ Phi_K do not dominate;
                               0 at initialisation, 1 on Phi_K, negative when G is farther than Phi_1)
    delta_e_move, kappa_move   Delta_E(G_{t-k}, G_t) and its kappa: does the student's own pairing still move?
    kappa_drift                the change of kappa over the second half of the run, from the least-squares line
                               through the rows with step >= t / 2 (null with fewer than 3 such rows): a slow drift
                               that each window of `patience` evaluations passes adds up here
    stop                       the stop rule's decision at t; eval_s: the evaluation's wall time (the only field
                               that is not reproducible)

Stop rule (`until_converged`; the iteration count is then the maximum): converged at t when t >= `min_iterations`
(a student's early copying phase can be stable for hundreds of iterations before its pairing drifts, so a rule
that may fire earlier mistakes that phase for convergence) and, at each of the last `patience` evaluations, fit_ratio <= fit_factor (close to the floor) and spread_ratio >= min_spread (not
collapsed), fit_change <= fit_tol (the fit is stable), covered_change <= covered_tol (G no longer moves towards
or away from Phi_K; a student leaving its copying phase drifts away from Phi_K while its pairing and fit still
look fixed), delta_e_move <= move_tol and kappa_change <= kappa_tol (the pairing no longer moves: Delta_E
between consecutive evaluations is 0 whenever G moves less than its samples are apart, so a slow drift of the
pairing shows only in kappa over the window), and |kappa_drift| <= max(drift_abs, drift_rel * kappa) (no slow
drift over the second half of the run: a drift of 0.01-0.03 per window passes kappa_tol for ever). `convergence(rows, cfg)` states the verdict and the numbers that decided
it; the verdict is in results.json whether or not the rule stopped the student.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from dmdjax import files, metrics

__all__ = ["RecordConfig", "Recorder", "convergence", "finished_checkpoint", "kappa_drift", "read_record"]


@dataclasses.dataclass(frozen=True)
class RecordConfig:
    eval_every: int = 0             # iterations between evaluations; 0 = no record
    n: int = 200                    # noises the record evaluates on (the first n of the shared evaluation noises)
    ci_resamples: int = 50          # half-sample replicates of each interval
    ci_level: float = 0.95
    until_converged: bool = False   # stop the student at the first converged evaluation
    fit_factor: float = 1.5         # converged: fit_ratio <= fit_factor ...
    min_spread: float = 0.5         # ... and spread_ratio >= min_spread ...
    fit_tol: float = 0.05           # ... and fit_change <= fit_tol ...
    move_tol: float = 0.05          # ... and delta_e_move <= move_tol ...
    kappa_tol: float = 0.05         # ... and kappa_change <= kappa_tol ...
    covered_tol: float = 0.05       # ... and covered_change <= covered_tol ...
    drift_rel: float = 0.25         # ... and |kappa_drift| <= max(drift_abs, drift_rel * kappa) ...
    drift_abs: float = 0.02
    patience: int = 3               # ... at each of the last `patience` evaluations ...
    min_iterations: int = 0         # ... from this iteration on

    def drift_within(self, drift: float, kappa: float) -> bool:
        """The drift criterion: |kappa_drift| <= max(drift_abs, drift_rel * kappa)."""
        return abs(drift) <= max(self.drift_abs, self.drift_rel * kappa)

    def validate(self, gen_every: int = 1) -> None:
        """Clear one-line errors before any training starts."""
        if self.eval_every < 0 or self.eval_every % gen_every:
            fix = max(gen_every, self.eval_every // gen_every * gen_every)
            raise ValueError(f"record.eval_every ({self.eval_every}) must be 0 (off) or a positive multiple of "
                             f"distill.gen_every ({gen_every}), e.g. {fix}")
        if not self.eval_every:
            if self.until_converged:
                raise ValueError("until_converged needs the record: set record.eval_every (--eval_every) > 0")
            return
        if self.n < 8:
            raise ValueError(f"record.n must be at least 8 (intervals on halves of halves), got {self.n}")
        if self.ci_resamples < 2 or not 0 < self.ci_level < 1:
            raise ValueError(f"record.ci_resamples must be >= 2 and 0 < ci_level < 1, got {self.ci_resamples}, "
                             f"{self.ci_level}")
        if self.patience < 1 or min(self.fit_factor, self.fit_tol, self.move_tol, self.kappa_tol,
                                    self.covered_tol, self.drift_abs) <= 0 \
                or min(self.min_spread, self.min_iterations, self.drift_rel) < 0:
            raise ValueError("record.patience must be >= 1, fit_factor, fit_tol, move_tol, kappa_tol, covered_tol, "
                             "drift_abs positive, min_spread, min_iterations and drift_rel >= 0")


def finished_checkpoint(directory: str | Path) -> int | None:
    """The latest step whose Orbax checkpoint in `directory` is complete (Orbax renames a step's directory to its
    number when the save has finished), or None: a run resumes from it or from a later one."""
    directory = Path(directory)
    return max((int(p.name) for p in directory.iterdir() if p.name.isdigit()), default=None) \
        if directory.is_dir() else None


def read_record(path: str | Path) -> list[dict]:
    """The rows of a record.jsonl (empty if there is none), in step order."""
    return files.read_lines(path)


def _write_rows(path: Path, rows: list[dict]) -> None:
    files.write_lines(path, rows)


def _flat(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a.reshape(len(a), -1)


def _w2(a, b) -> float:
    return float(np.sqrt(metrics.transport_energies(a, b).e_ot))


def _spread(a) -> float:
    """mean_i ||a_i - mean(a)||^2 of (n, ...) samples."""
    a = _flat(a)
    return float(np.mean(np.sum((a - a.mean(0)) ** 2, axis=1)))


def kappa_drift(rows: list[dict]) -> float | None:
    """The change of kappa over the second half of a record ending at t = rows[-1]["step"]: the slope of the
    least-squares line through the rows with step >= t / 2, times t / 2; None with fewer than 3 such rows."""
    if not rows:
        return None
    t = rows[-1]["step"]
    half = [r for r in rows if r["step"] >= t / 2]
    if len(half) < 3:
        return None
    steps = np.array([r["step"] for r in half], np.float64)
    slope = np.polyfit(steps, np.array([r["kappa"] for r in half], np.float64), 1)[0]
    return float(slope * t / 2)


def convergence(rows: list[dict], cfg: RecordConfig) -> dict:
    """The stop rule's verdict on a record: `converged` and the numbers of the last `patience` evaluations that
    decided it (criteria in the module docstring; kappa_drift is recomputed from the rows, so a record written
    without it is judged by the same rule)."""
    keys = ("fit_ratio", "spread_ratio", "fit_change", "kappa_change", "covered_change", "delta_e_move")
    last = []                                  # the last `patience` rows with every number, newest first
    for i in reversed(range(len(rows))):
        drift = kappa_drift(rows[:i + 1])
        if drift is not None and all(rows[i].get(k) is not None for k in keys):
            last.append({**rows[i], "kappa_drift": drift})
            if len(last) == cfg.patience:
                break
    keys += ("kappa_drift",)
    checks = [{"step": r["step"], **{k: r[k] for k in keys},
               "ok": bool(r["fit_ratio"] <= cfg.fit_factor and r["spread_ratio"] >= cfg.min_spread
                          and r["fit_change"] <= cfg.fit_tol and r["covered_change"] <= cfg.covered_tol
                          and r["kappa_change"] <= cfg.kappa_tol and r["delta_e_move"] <= cfg.move_tol
                          and cfg.drift_within(r["kappa_drift"], r["kappa"]))}
              for r in reversed(last)]
    old_enough = bool(rows) and rows[-1]["step"] >= cfg.min_iterations
    return {"converged": old_enough and len(checks) == cfg.patience and all(c["ok"] for c in checks),
            "criteria": {"fit_factor": cfg.fit_factor, "min_spread": cfg.min_spread, "fit_tol": cfg.fit_tol,
                         "kappa_tol": cfg.kappa_tol, "covered_tol": cfg.covered_tol, "move_tol": cfg.move_tol,
                         "drift_rel": cfg.drift_rel, "drift_abs": cfg.drift_abs, "patience": cfg.patience,
                         "min_iterations": cfg.min_iterations},
            "last": checks}


TB_FIELDS = ("delta_e", "kappa", "delta_e_null", "w2", "fit_ratio", "spread_ratio", "covered", "kappa_drift")


class Recorder:
    """`run_loop` callback (step, state) -> stop that appends a row to `path` (module docstring).

    G_t of every row is kept in `<path stem>_g/<step>.npy` for Delta_E(G_{t-k}, G_t) after a resume; files older
    than the last row at or before the latest checkpoint are deleted, so a few remain.

    Args:
      cfg: the RecordConfig.
      path: the student's record.jsonl. On the first call (the run's start step s) rows after s are dropped (a
        resumed run rewrites them); a row already at s is reused, its stop decision taken again under `cfg` (a
        student stopped by an earlier rule resumes when the current one says it has not converged).
      ref, phi_1: (n, ...) Phi_K and Phi_1 on the record's noises.
      generate: params -> (n, ...) numpy samples G(z) on the same noises.
      latest_checkpoint: () -> the latest saved step (or None), for pruning the G files.
      seed: seed of the intervals' resampling.
      main: whether this process writes (multi-host: the first one).
      tensorboard: also write every row's numbers as TensorBoard scalars under `record/` in path's directory
        (`TB_FIELDS`, kappa's and Delta_E's interval bounds as `_low` / `_high`); `close()` ends the file.
    """

    def __init__(self, cfg: RecordConfig, path: str | Path, ref, phi_1, generate: Callable,
                 latest_checkpoint: Callable = lambda: None, seed: int = 0, main: bool = True,
                 tensorboard: bool = True):
        self.cfg, self.path, self.generate, self.seed, self.main = cfg, Path(path), generate, seed, main
        self.tensorboard, self._tb = tensorboard and main, None
        self.latest_checkpoint = latest_checkpoint
        self.g_dir = self.path.with_name(self.path.stem + "_g")
        self.ref, self.phi_1 = np.asarray(ref), np.asarray(phi_1)
        h = len(self.ref) // 2
        self.half = h
        self.w2_floor = _w2(self.ref[:h], self.ref[h:2 * h])
        self.dist_1 = float(np.mean(np.linalg.norm(_flat(self.phi_1) - _flat(self.ref), axis=1)))
        self.spread_ref = _spread(self.ref)
        self.rows: list[dict] | None = None
        self.prev: np.ndarray | None = None

    def _g_path(self, step: int) -> Path:
        return self.g_dir / f"{step:08d}.npy"

    def __call__(self, step: int, state) -> bool:
        t0 = time.perf_counter()
        if self.rows is None:                          # first call: this run's start (0 or the resumed step)
            self.rows = [r for r in read_record(self.path) if r["step"] <= step]
            resumed_at_row = bool(self.rows) and self.rows[-1]["step"] == step
            if resumed_at_row:
                self.rows[-1]["stop"] = self._stop(self.rows)
            if self.main:
                _write_rows(self.path, self.rows)
            if self.rows and self._g_path(self.rows[-1]["step"]).exists():
                self.prev = np.load(self._g_path(self.rows[-1]["step"]))
            if resumed_at_row:
                return self.rows[-1]["stop"]
            if step % self.cfg.eval_every:
                return False
        g = np.asarray(self.generate(state.gen.params))
        row = self.measure(step, g, self.prev)
        row["stop"] = self._stop(self.rows + [row])
        row["eval_s"] = time.perf_counter() - t0
        if self.main:
            self.g_dir.mkdir(parents=True, exist_ok=True)
            files.save_npy(self._g_path(step), g)
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            self._prune()
            if self.tensorboard:
                self._scalars(row)
        self.rows.append(row)
        self.prev = g
        return row["stop"]

    def _scalars(self, row: dict) -> None:
        from dmdjax.tensorboard import ScalarWriter
        if self._tb is None:
            self._tb = ScalarWriter(self.path.parent)
        values = {f"record/{k}": row[k] for k in TB_FIELDS if isinstance(row.get(k), (int, float))}
        for k in ("kappa", "delta_e"):
            values.update({f"record/{k}_low": row[f"{k}_ci"][0], f"record/{k}_high": row[f"{k}_ci"][1]})
        self._tb.scalars(row["step"], {k: v for k, v in values.items() if v is not None and math.isfinite(v)})
        self._tb.flush()

    def close(self) -> None:
        """Close the TensorBoard file (rows written so far are flushed already)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _stop(self, rows: list[dict]) -> bool:
        return bool(self.cfg.until_converged and convergence(rows, self.cfg)["converged"])

    def _prune(self) -> None:
        """Delete G files a resume can no longer need: older than the last row at or before the latest
        checkpoint (resumes start there or later)."""
        latest = self.latest_checkpoint() or 0
        keep_from = max([r["step"] for r in self.rows if r["step"] <= latest], default=0)
        for f in self.g_dir.glob("*.npy"):
            if f.stem.isdigit() and int(f.stem) < keep_from:
                f.unlink()

    def measure(self, step: int, g: np.ndarray, prev: np.ndarray | None) -> dict:
        """One record row for G_t = g (prev: G at the previous row, or None)."""
        cfg, ref, h = self.cfg, self.ref, self.half
        ci = metrics.copying_index_ci(ref, g, n_resamples=cfg.ci_resamples, level=cfg.ci_level, seed=self.seed)
        w2 = _w2(g[:h], ref[h:2 * h])
        dist_g = float(np.mean(np.linalg.norm(_flat(g) - _flat(ref), axis=1)))
        row = {"step": int(step), "delta_e": float(ci.index.delta_e), "delta_e_ci": [ci.delta_e.low, ci.delta_e.high],
               "kappa": float(ci.index.kappa), "kappa_ci": [ci.kappa.low, ci.kappa.high],
               "delta_e_null": float(ci.index.delta_e_null), "kappa_reliable": bool(ci.index.reliable),
               "w2": w2, "w2_floor": self.w2_floor, "fit_ratio": w2 / self.w2_floor if self.w2_floor > 0 else math.inf,
               "spread_ratio": _spread(g) / self.spread_ref if self.spread_ref > 0 else math.nan,
               "fit_change": None, "kappa_change": None, "covered_change": None,
               "covered": 1.0 - dist_g / self.dist_1 if self.dist_1 > 0 else math.nan,
               "delta_e_move": None, "kappa_move": None}
        back = [r for r in self.rows if r["step"] == step - cfg.patience * cfg.eval_every]
        if back:
            row["fit_change"] = abs(w2 - back[0]["w2"]) / w2 if w2 > 0 else math.inf
            row["kappa_change"] = abs(row["kappa"] - back[0]["kappa"])
            row["covered_change"] = abs(row["covered"] - back[0]["covered"])
        if prev is not None and self.rows:
            move = metrics.copying_index(prev, g)
            row["delta_e_move"], row["kappa_move"] = float(move.delta_e), float(move.kappa)
        row["kappa_drift"] = kappa_drift(self.rows + [row])
        return row
