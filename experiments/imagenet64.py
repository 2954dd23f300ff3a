"""Conditional ImageNet-64 (paper App. D; Fig. 8-10): EDM's pre-trained ADM teacher -> one-step DMD student ->
Phi_1, Phi_8, Phi_32 (deterministic Heun, S_churn = 0) and G on N shared noises with random labels -> Delta_E.

    python tools/export_edm_pkl.py --pkl=edm-imagenet-64x64-cond-adm.pkl --edm_dir=edm --out=teacher/edm64.npz
    python experiments/imagenet64.py --teacher_npz=teacher/edm64.npz --workdir=runs/imagenet64 [--bf16]

The teacher is not trained here: it is EDM's `edm-imagenet-64x64-cond-adm.pkl`, exported once to `.npz` with
tools/export_edm_pkl.py (the only step that needs torch). The paper preset distills with batch 32 for 50,000
iterations at lr 2e-6 (one H100 in the paper). Layout: workdir/config.json, workdir/student/ (Orbax checkpoints,
metrics.jsonl, samples.npz, figures), workdir/results.json. Rerunning the same command resumes from the last
checkpoint and skips a finished evaluation. `--config_json` replaces the preset's network config by a sidecar's
(e.g. a small network in the same export format, for a smoke run on a CPU).

Does DMD without the GAN term need ImageNet images? No. A distillation iteration (`dmdjax.distill.make_iteration`)
consumes the teacher's params, unit noise z, uniformly random one-hot labels, and random noise levels and eps:
G(z) = D(80 z; 80, y) (REFERENCE 1.2), the DM loss compares the teacher's and the fake score's denoisings of
noised G(z) (1.4), and the fake score is trained on detached G(z) (1.5). DMD2 also draws a real ImageNet batch
every iteration (1.6), but uses it only in the GAN classifier's real branch (1.7), which the paper disables
(App. D). So its Dataset (`data.load`: `data.imagenet64_dataset`) has no sampler and no training images; the
evaluation (Delta_E between Phi_8 and G, the figures) needs none either. Only the memorization statistics
(Sec. 4.1.2, done on MNIST) and an FID would need ImageNet data.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax.numpy as jnp

from dmdjax import cli, configs, convert, data, files, parallel, pipeline
from dmdjax.checkpoint import check_config


def teacher_sha256(path: Path, parser) -> str:
    """The teacher file's SHA-256 (hex), recorded in config.json: a resume with another teacher of the same
    file name is refused."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        parser.error(f"--teacher_npz: {e}")
    return digest.hexdigest()


def main(argv=None) -> dict:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--teacher_npz", required=True, type=Path,
                        help="the teacher exported by tools/export_edm_pkl.py (.npz state dict)")
    parser.add_argument("--config_json", type=Path,
                        help="network config sidecar (JSON with 'config'); default: the preset's (EDM ImageNet-64)")
    parser.add_argument("--pca_n", type=cli.positive_int, help="override the number of triplets in the PCA figure")
    cli.add_common_flags(parser, presets=configs.imagenet64.get_config)
    parser.set_defaults(preset="paper")
    args = cli.parse(parser, argv)
    if args.preset != "paper":
        parser.error("--preset: imagenet64 has only the paper preset; for a small run pass a small exported "
                     "network with --teacher_npz and --config_json")
    cli.start(args)              # before any JAX computation: XLA:CPU tuning on a CPU-only host, --distributed
    net_kwargs = None
    if args.config_json:
        try:
            net_kwargs = convert.read_config(args.config_json)
        except (OSError, ValueError) as e:
            parser.error(f"--config_json: {e}")
    cfg = cli.configure(configs.imagenet64, args, net_kwargs=net_kwargs, pca_n=args.pca_n)
    cli.print_config_and_exit(cfg, args)
    mesh = cli.check(cfg, args)  # every config error, before loading the teacher and writing config.json
    workdir = cli.workdir(cfg, args)
    cli.announce(cfg, args)
    check_config(workdir / "config.json", {**cfg.to_dict(), "teacher_npz": args.teacher_npz.name,
                                           "teacher_sha256": teacher_sha256(args.teacher_npz, parser)})
    result_path = workdir / "results.json"
    if parallel.agree(result_path.exists()):       # multi-host: process 0's file decides
        result = json.loads(result_path.read_text())
    else:
        try:
            model, teacher_params = convert.load_teacher(args.teacher_npz, cfg.net_kwargs,
                                                         dtype=jnp.dtype(cfg.compute_dtype))
        except (OSError, ValueError) as e:
            parser.error(f"--teacher_npz: {e}")
        result = pipeline.distill_and_evaluate(cfg, data.load(cfg), model, teacher_params, workdir / "student",
                                               workdir / pipeline.WALL_TIMES, mesh=mesh, progress=not args.quiet)
        result = {"teacher_npz": str(args.teacher_npz), **result, "config": cfg.to_dict()}
        if parallel.is_main():
            files.write_json(result_path, result)
    cli.echo(json.dumps({"workdir": str(workdir), "delta_e": result["delta_e"]}, indent=1))
    return result


if __name__ == "__main__":
    cli.run(main)
