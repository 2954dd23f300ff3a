"""Command-line flags shared by the experiments (argparse; `--flag=value` style)."""
from __future__ import annotations

import argparse
import dataclasses

from dmdjax import configs


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=configs.PRESETS, default="cpu",
                        help="cpu: minutes on a 2-core CPU; paper: the paper's App. D settings (GPU/TPU)")
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, results.json, figures)")
    parser.add_argument("--teacher_steps", type=positive_int, help="override the preset's teacher iterations")
    parser.add_argument("--distill_iterations", type=positive_int, help="override the preset's DMD iterations")
    parser.add_argument("--eval_n", type=positive_int, help="override N, the number of shared noises (>= 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--devices", type=positive_int,
                        help="data-parallel over the first N devices (default: all; the result does not depend on N)")
    parser.add_argument("--bf16", action="store_true",
                        help="run the network interior in bfloat16 (GPU/TPU); preconditioning, losses and master "
                             "weights stay float32")
    parser.add_argument("--distributed", action="store_true",
                        help="multi-host: call jax.distributed.initialize() first (one process per host)")
    parser.add_argument("--dm_loss_every_iteration", action="store_true",
                        help="compute the DM loss (Fig. 4) on every DMD iteration, not only where the generator "
                             "updates (DMD2's choice): a 5x denser curve for ~1/3 more time on 4 of 5 iterations")
    parser.add_argument("--no_xla_tuning", action="store_true",
                        help="keep XLA:CPU's default kernels and glibc's default allocator (see dmdjax/xla_cpu.py)")


def apply_common_flags(cfg, args):
    changes = {"seed": args.seed}
    if args.teacher_steps:
        changes["teacher.steps"] = args.teacher_steps
    if args.distill_iterations:
        changes["distill.iterations"] = args.distill_iterations
    if args.eval_n:
        changes["eval_n"] = args.eval_n
    if args.bf16:
        changes["compute_dtype"] = "bfloat16"
    if args.dm_loss_every_iteration:
        changes["distill.dm_loss_every_iteration"] = True
    return configs.override(cfg, **changes)


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """`parser.parse_args(argv)`, then what must precede any JAX computation in the process (data loading
    included): XLA:CPU tuning (`xla_cpu.tune`, unless --no_xla_tuning) and, with --distributed,
    jax.distributed.initialize() (coordinator, process count and id from the launcher / TPU metadata)."""
    args = parser.parse_args(argv)
    from dmdjax import xla_cpu
    xla_cpu.tune(enable=not args.no_xla_tuning)
    if args.distributed:
        import jax
        jax.distributed.initialize()
    return args


def device_mesh(args):
    """The `data` mesh the experiment runs on (`parse` has set up the process)."""
    from dmdjax import parallel
    return parallel.data_mesh(args.devices)


def snapshot_list(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(sorted({positive_int(t) for t in text.split(",") if t.strip()}))
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"--snapshots takes comma-separated positive integers: {e}") from None
    if not steps:
        raise argparse.ArgumentTypeError("--snapshots needs at least one step, e.g. 1024,2048,4096,8192")
    return steps


def add_mnist_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mnist_dir", default=None,
                        help="directory with the four original MNIST .gz files (offline; else DMDJAX_MNIST_DIR, "
                             "else TFDS downloads them)")
    parser.add_argument("--snapshots", type=snapshot_list,
                        help="teacher steps to keep and distill, e.g. 1024,2048,4096,8192 (<= --teacher_steps)")


def mnist_dataset(cfg, mnist_dir=None):
    """MNIST as a pipeline Dataset at the resolution of cfg's network (labels one-hot when the net is conditional)."""
    from dmdjax.data.mnist import load_mnist
    from dmdjax.pipeline import image_dataset
    images, labels = load_mnist("train", manual_dir=mnist_dir, resolution=cfg.net_kwargs["img_resolution"])
    test_images, test_labels = load_mnist("test", manual_dir=mnist_dir, resolution=cfg.net_kwargs["img_resolution"])
    data = image_dataset("mnist", images, labels, cfg.net_kwargs.get("label_dim", 0))
    return dataclasses.replace(data, test_images=test_images, test_labels=test_labels)   # held-out quality
