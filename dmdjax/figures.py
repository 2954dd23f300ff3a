"""The paper's figures, redrawn with matplotlib from arrays (no training code here).

Every function takes numpy arrays, returns a `matplotlib.figure.Figure`, and `save(fig, path)` writes a PNG.
The figures are made without pyplot (`matplotlib.figure.Figure`, drawn by the Agg canvas when saved): importing
this module neither switches matplotlib's backend nor adds to pyplot's figures, so a notebook keeps its own.
"""
from __future__ import annotations

import os

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
    """(Figure, axes) as `pyplot.subplots` returns them, without pyplot's global state."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save(fig, path: str | os.PathLike) -> None:
    """Write `fig` as a PNG at `path` (110 dpi)."""
    fig.savefig(path, dpi=110, bbox_inches="tight")


def seed_colors(z: np.ndarray) -> np.ndarray:
    """One RGBA colour per noise seed, from the angle and radius of z's first two coordinates (N, 4)."""
    z = np.asarray(z).reshape(len(z), -1)
    angle = (np.arctan2(z[:, 1], z[:, 0]) + np.pi) / (2 * np.pi)
    radius = np.hypot(z[:, 0], z[:, 1])
    colors = colormaps["hsv"](angle)
    colors[:, :3] *= (0.35 + 0.65 * np.clip(radius / 2.5, 0, 1))[:, None]
    return colors


def pairing_scatter(panels: dict[str, np.ndarray], z: np.ndarray, title: str = "", lim: float | None = None):
    """Fig. 2 / Fig. 7: panels (e.g. z, Phi_8, Phi_1, G), first two coordinates, coloured by seed."""
    colors = seed_colors(z)
    fig, axes = subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (name, pts) in zip(np.atleast_1d(axes), panels.items()):
        pts = np.asarray(pts).reshape(len(pts), -1)
        ax.scatter(pts[:, 0], pts[:, 1], c=colors, s=4, linewidths=0)
        ax.set_title(name)
        ax.set_aspect("equal")
        if lim is not None and name != "z":
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
    if title:
        fig.suptitle(title)
    return fig


def distance_heatmap(teacher: np.ndarray, student: np.ndarray, assignment: np.ndarray, title: str = ""):
    """Fig. 3 / Fig. 6 bottom: squared L2 distances ||Phi_K(z_i) - G(z_j)||^2 for n pairs (rows i = teacher,
    columns j = student); the OT assignment i -> assignment[i] boxed in red, the DT pairing is the diagonal."""
    t = np.asarray(teacher, np.float64).reshape(len(teacher), -1)
    s = np.asarray(student, np.float64).reshape(len(student), -1)
    d2 = (t ** 2).sum(1)[:, None] + (s ** 2).sum(1)[None, :] - 2 * t @ s.T
    fig, ax = subplots(figsize=(5.5, 5))
    im = ax.imshow(np.maximum(d2, 0), cmap="viridis", origin="upper")
    for i, j in enumerate(np.asarray(assignment)):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=0.8))
    ax.set_xlabel("student index j")
    ax.set_ylabel("teacher index i")
    fig.colorbar(im, ax=ax, fraction=0.046, label=r"$\|\Phi_K(z_i) - G(z_j)\|^2$")
    if title:
        ax.set_title(title)
    return fig


def running_mean(steps, values, smooth: int) -> tuple[np.ndarray, np.ndarray]:
    """Running mean of a logged series over `smooth` iterations (fewer points where it is logged every k-th
    iteration, e.g. the DM loss; at most a tenth of the points). Returns (steps, means), both shortened."""
    steps, values = np.asarray(steps), np.asarray(values)
    spacing = max(1, int(np.median(np.diff(steps)))) if len(steps) > 1 else 1
    w = max(1, min(smooth // spacing, len(values) // 10))
    return steps[w - 1:], np.convolve(values, np.ones(w) / w, mode="valid")


def dm_loss_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], zoom: int = 900, smooth: int = 50):
    """Fig. 4: DM loss over distillation iterations, one curve per label; right panel zooms on the first
    `zoom` iterations. Curves are smoothed by a running mean over `smooth` iterations."""
    fig, axes = subplots(1, 2, figsize=(11, 3.8))
    for label, (steps, loss) in curves.items():
        steps, smoothed = running_mean(steps, loss, smooth)
        axes[0].plot(steps, smoothed, label=label, lw=1)
        mask = steps < zoom
        axes[1].plot(steps[mask], smoothed[mask], label=label, lw=1)
    for ax, t in zip(axes, ["DM loss", f"first {zoom} iterations"]):
        ax.set_xlabel("distillation iteration")
        ax.set_ylabel("DM loss")
        ax.set_title(t)
        ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    return fig


def copying_trend(snapshots: dict, teacher_quality: dict | None = None):
    """Delta_E and kappa of each snapshot's student (G) and of its Phi_1, with their intervals, against the
    teacher's training steps and, when given, against its held-out EDM loss (`quality`): the paper's
    teacher-length trend (Sec. 4.2, Table 1) on both axes. `snapshots`: {step: results.json of its student}."""
    steps = sorted(snapshots, key=int)
    x_axes = [("teacher training steps", np.array([float(s) for s in steps]), "log2")]
    if teacher_quality:
        loss = [teacher_quality.get(s, {}).get("heldout_edm_loss") for s in steps]
        if all(v is not None for v in loss):
            x_axes.append(("teacher's held-out EDM loss", np.array(loss, float), "linear"))
    fig, axes = subplots(2, len(x_axes), figsize=(5.2 * len(x_axes), 6.4), squeeze=False)
    for col, (label, x, scale) in enumerate(x_axes):
        for row, key in enumerate(("delta_e", "kappa")):
            ax = axes[row, col]
            for suffix, name, marker in (("", "G", "o-"), ("_phi1", "Phi_1", "s--")):
                y = np.array([snapshots[s].get(f"{key}{suffix}", np.nan) for s in steps], float)
                ci = np.array([snapshots[s].get(f"{key}{suffix}_ci", [np.nan, np.nan]) for s in steps], float)
                ci = np.where(np.isfinite(ci), ci, np.nan)
                ax.plot(x, y, marker, ms=4, lw=1, label=name)
                ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.2)
            if key == "kappa":
                ax.axhline(1.0, color="gray", ls=":", lw=1)
            if scale == "log2":
                ax.set_xscale("log", base=2)
            ax.set_xlabel(label)
            ax.set_ylabel(r"$\Delta_E$ vs $\Phi_8$" if key == "delta_e" else r"$\kappa$ (1 = random pairing)")
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _draw_image_rows(axes, rows: dict[str, np.ndarray], n: int) -> None:
    """Fill a (len(rows), n) grid of axes: row r shows the first n images of rows' r-th entry, labelled."""
    for r, (name, imgs) in enumerate(rows.items()):
        imgs = np.clip((np.asarray(imgs[:n]) + 1) / 2, 0, 1)
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                img = imgs[c]
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].text(-0.5, 0.5, name, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)


def image_rows(rows: dict[str, np.ndarray], n: int = 30, title: str = ""):
    """Fig. 1 / 6 / 8 / 11 top: one row of n images per entry (e.g. Phi_1, Phi_8, Phi_32, G), images (N,H,W,C)
    in [-1, 1]."""
    fig, axes = subplots(len(rows), n, figsize=(n * 0.45, len(rows) * 0.5 + 0.3), squeeze=False)
    _draw_image_rows(axes, rows, n)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.02, hspace=0.05)
    return fig


def pca_triplets(projected: dict[str, np.ndarray], z: np.ndarray, title: str = ""):
    """Fig. 1 bottom / Fig. 9: samples projected on the two leading principal components of Phi_8, one panel
    per entry (e.g. Phi_8, Phi_1, G), coloured by seed."""
    colors = seed_colors(z)
    fig, axes = subplots(1, len(projected), figsize=(3.4 * len(projected), 3.4), sharex=True, sharey=True)
    for ax, (name, pts) in zip(np.atleast_1d(axes), projected.items()):
        ax.scatter(pts[:, 0], pts[:, 1], c=colors, s=3, linewidths=0)
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    return fig


def displacement_scatter(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str = "",
                         diagonal: bool = True, hline: float | None = None):
    """Fig. 5 (D(z) vs delta(z), hline=0) and Fig. 10 / 11 bottom (||Phi_1 - Phi_8|| vs ||G - Phi_8||, diagonal)."""
    fig, ax = subplots(figsize=(4.2, 4))
    ax.scatter(x, y, s=4, alpha=0.6, linewidths=0)
    if diagonal:
        lo, hi = 0.0, float(max(np.max(x), np.max(y)))
        ax.plot([lo, hi], [lo, hi], "r--", lw=1)
    if hline is not None:
        ax.axhline(hline, color="r", ls="--", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return fig


def histogram(values: np.ndarray, xlabel: str, title: str = "", bins: int = 50):
    """Fig. 12: histogram (e.g. of memorization ratios r)."""
    fig, ax = subplots(figsize=(4.5, 3.4))
    ax.hist(np.asarray(values), bins=bins)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if title:
        ax.set_title(title)
    return fig


def bar_panels(values: dict[str, dict[str, float]], ylabel: str, title: str = ""):
    """One panel per outer key (e.g. dataset) with one bar per inner key (e.g. plain / gan / regression), linear
    axis from 0 (the panels' scales differ: Delta_E is ~1 on the toys, ~0.01 on MNIST), values on the bars.
    values: {panel: {bar: value}}."""
    fig, axes = subplots(1, len(values), figsize=(0.6 + 2.8 * len(values), 3.4), squeeze=False)
    colors = colormaps["tab10"].colors
    for ax, (panel, bars) in zip(axes[0], values.items()):
        names = list(bars)
        rects = ax.bar(range(len(names)), [bars[n] for n in names], color=colors[:len(names)])
        ax.bar_label(rects, labels=[f"{bars[n]:.3g}" for n in names], fontsize=8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_title(panel)
        ax.margins(y=0.15)
    axes[0, 0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def line_plot(series: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str, title: str = "",
              logx: bool = False, logy: bool = False, ax=None):
    """One marked line per label: series {label: (x, y)}. Draws into `ax` if given, else a new figure."""
    fig = None
    if ax is None:
        fig, ax = subplots(figsize=(4.6, 3.6))
    for label, (x, y) in series.items():
        ax.plot(np.asarray(x), np.asarray(y), "o-", ms=3, lw=1, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig if fig is not None else ax.figure


def copying_dynamics(rows: dict[str, dict], smooth: int = 50):
    """The copying-dynamics figure (Fig. 4 extended): one row per run; left Delta_E(Phi_K, G_t) at the recorded iterations t (and
    Delta_E(G_T, G_t) against the final student: when the student's pairing is settled), right the DM loss per
    iteration (running mean over `smooth`). rows: {label: {'step', 'delta_e', 'delta_e_to_final',
    'dm_step', 'dm_loss'}}."""
    fig, axes = subplots(len(rows), 2, figsize=(10, 3.2 * len(rows)), squeeze=False)
    for (label, r), (ax_e, ax_l) in zip(rows.items(), axes):
        step = np.asarray(r["step"])
        ax_e.plot(step, np.maximum(np.asarray(r["delta_e"]), 1e-6), "o-", ms=3, lw=1, label=r"$\Delta_E(\Phi_K, G_t)$")
        if "delta_e_to_final" in r:   # 0 at t = T by definition: not drawn
            ax_e.plot(step[:-1], np.maximum(np.asarray(r["delta_e_to_final"])[:-1], 1e-6), "s--", ms=3, lw=1,
                      label=r"$\Delta_E(G_T, G_t)$")
        ax_e.set_yscale("log")
        ax_e.set_xlabel("distillation iteration t")
        ax_e.set_ylabel(r"$\Delta_E$")
        ax_e.set_title(label)
        ax_e.legend(fontsize=8)
        ax_l.plot(*running_mean(r["dm_step"], r["dm_loss"], smooth), lw=1)
        ax_l.set_yscale("log")
        ax_l.set_xlim(ax_e.get_xlim())
        ax_l.set_xlabel("distillation iteration t")
        ax_l.set_ylabel("DM loss")
        ax_l.set_title(f"{label}: DM loss")
    fig.tight_layout()
    return fig


def convergence_record(rows: list[dict], dm_curve: tuple, cfg=None, title: str = "", smooth: int = 50):
    """One student's convergence record (`dmdjax.record`) beside its DM loss, over distillation iterations t:
    DM loss (running mean); Delta_E(Phi_K, G_t) with its interval and Delta_E(G_{t-k}, G_t); kappa with its
    interval; the fit W2(G_t, Phi_K) / floor (1 = the teacher's own floor; dashed: cfg.fit_factor), the
    fraction of the Phi_1 -> Phi_K distance covered and the spread of G_t relative to Phi_K's."""
    fig, axes = subplots(1, 4, figsize=(17, 3.4))
    ax_l, ax_e, ax_k, ax_f = axes
    if len(dm_curve[0]):
        ax_l.plot(*running_mean(dm_curve[0], dm_curve[1], smooth), lw=1)
        ax_l.set_yscale("log")
    ax_l.set_ylabel("DM loss")
    t = np.array([r["step"] for r in rows], float)
    col = lambda key: np.array([np.nan if r.get(key) is None else r[key] for r in rows], float)
    bounds = lambda key: np.array([[np.nan if v is None else v for v in r[key]] for r in rows], float).reshape(-1, 2)
    if len(rows):
        ci = bounds("delta_e_ci")
        ax_e.plot(t, col("delta_e"), "o-", ms=3, lw=1, label=r"$\Delta_E(\Phi_K, G_t)$")
        ax_e.fill_between(t, ci[:, 0], ci[:, 1], alpha=0.25)
        ax_e.plot(t, col("delta_e_move"), "s--", ms=3, lw=1, label=r"$\Delta_E(G_{t-k}, G_t)$")
        kci = bounds("kappa_ci")
        ax_k.plot(t, col("kappa"), "o-", ms=3, lw=1, label=r"$\kappa(\Phi_K, G_t)$")
        ax_k.fill_between(t, kci[:, 0], kci[:, 1], alpha=0.25)
        ax_k.axhline(1.0, color="gray", ls=":", lw=1)
        ax_f.plot(t, col("fit_ratio"), "o-", ms=3, lw=1, label="W2(G_t, Phi_K) / floor")
        ax_f.plot(t, col("covered"), "s-", ms=3, lw=1, label="fraction of ||Phi_1 - Phi_K|| covered")
        ax_f.plot(t, col("spread_ratio"), "^-", ms=3, lw=1, label="spread of G_t / spread of Phi_K")
        ax_f.axhline(1.0, color="gray", ls=":", lw=1)
        if cfg is not None:
            ax_f.axhline(cfg.fit_factor, color="r", ls="--", lw=1, label="fit_factor")
    ax_e.set_ylabel(r"$\Delta_E$")
    ax_k.set_ylabel(r"$\kappa$ (0 copies, 1 random pairing)")
    for ax in axes:
        ax.set_xlabel("distillation iteration t")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def quadruple_panels(panels: dict[str, dict[str, np.ndarray]], n: int = 30):
    """Fig. 8: one panel per data set (title), each with rows of n images (e.g. Phi_1, Phi_8, Phi_32, G)."""
    n_rows = sum(len(rows) for rows in panels.values())
    fig = Figure(figsize=(n * 0.45, n_rows * 0.5 + 0.45 * len(panels)))
    sub = fig.subfigures(len(panels), 1, squeeze=False)[:, 0]
    for sf, (title, rows) in zip(sub, panels.items()):
        axes = sf.subplots(len(rows), n, squeeze=False)
        _draw_image_rows(axes, rows, n)
        sf.suptitle(title, fontsize=9)
        sf.subplots_adjust(wspace=0.02, hspace=0.05)
    return fig


def pca_grid(rows: dict[str, dict[str, np.ndarray]]):
    """Fig. 9: one row per data set, panels (Phi_8, Phi_1, G) projected on Phi_8's two leading PCs, coloured by
    seed (the colour comes from the Phi_8 projection)."""
    names = list(rows)
    cols = list(next(iter(rows.values())))
    fig, axes = subplots(len(names), len(cols), figsize=(3.2 * len(cols), 3.1 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        colors = seed_colors(rows[name][cols[0]])
        for c, col in enumerate(cols):
            pts = np.asarray(rows[name][col])
            axes[r, c].scatter(pts[:, 0], pts[:, 1], c=colors, s=3, linewidths=0)
            axes[r, c].set_title(f"{name}: {col}", fontsize=9)
    fig.tight_layout()
    return fig


def distance_panels(panels: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str):
    """Fig. 10: one scatter per data set of (||Phi_1 - Phi_8||, ||G - Phi_8||) per seed, with the diagonal."""
    fig, axes = subplots(1, len(panels), figsize=(3.8 * len(panels), 3.6), squeeze=False)
    for ax, (name, (x, y)) in zip(axes[0], panels.items()):
        ax.scatter(x, y, s=4, alpha=0.6, linewidths=0)
        hi = float(max(np.max(x), np.max(y)))
        ax.plot([0, hi], [0, hi], "r--", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def kappa_vs_lr_sum(records: dict[int, dict[str, tuple[float, list[dict]]]]):
    """The regime study's figure: kappa (with its interval) against the sum of DMD learning rates lr x iterations,
    one panel per teacher snapshot, one line per arm. records: {snapshot: {arm: (lr, record rows)}}."""
    snaps = sorted(records)
    fig, axes = subplots(1, len(snaps), figsize=(4.6 * len(snaps), 3.6), squeeze=False)
    for ax, snap in zip(axes[0], snaps):
        for arm, (lr, rows) in records[snap].items():
            s = np.array([lr * r["step"] for r in rows])
            k = np.array([r["kappa"] for r in rows])
            lo, hi = (np.array([r["kappa_ci"][i] for r in rows]) for i in (0, 1))
            line, = ax.plot(s, k, "o-", ms=2.5, lw=1, label=arm)
            ax.fill_between(s, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
        ax.axvline(0.1, color="0.6", lw=0.8, ls="--")
        ax.set_xlabel("sum of DMD learning rates (lr x iterations)")
        ax.set_ylabel("kappa (0 = copies its teacher)")
        ax.set_title(f"teacher snapshot {snap}")
        ax.legend(fontsize=8)
    return fig
