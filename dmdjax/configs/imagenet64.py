"""Conditional ImageNet-64 (App. D, Fig. 8-10; `experiments/imagenet64.py`):

    python experiments/imagenet64.py --teacher_npz=teacher/edm64.npz --workdir=runs/imagenet64 [--bf16]

EDM's converted teacher (`nets.adm.imagenet64_config`, 1000 classes; not trained here), DMD at lr 2e-6, batch 32,
50,000 iterations, 500 warm-up; Phi_1/8/32 on N = 1000 noises with random labels, evaluated in chunks of 100.
Only `paper` exists.
"""
from __future__ import annotations

from dmdjax.config import Config
from dmdjax.configs import check_preset, override, resolve
from dmdjax.distill import DistillConfig

DERIVED = {}


def get_config(preset: str = "paper", net_kwargs: dict | None = None, pca_n: int | None = None) -> Config:
    """net_kwargs: another network of the same export format (a small one runs on a CPU); pca_n: triplets in
    the PCA figure."""
    check_preset(preset)
    if preset != "paper":
        raise ValueError("imagenet64 has only the 'paper' preset (GPU/TPU; --bf16 optional); for a smoke run "
                         "give experiments/imagenet64.py a small exported network and --config_json")
    from dmdjax.nets.adm import imagenet64_config
    distill = DistillConfig(iterations=50_000, batch=32, lr_gen=2e-6, lr_fake=2e-6, warmup=500, ckpt_every=1000,
                            chunk=5)
    cfg = Config(name="imagenet64-paper", dataset="imagenet64", net="adm", net_kwargs=imagenet64_config(),
                 distill=distill, eval_n=1000, eval_ks=(1, 8, 32), eval_batch=100)
    if net_kwargs is not None:
        cfg = override(cfg, net_kwargs=net_kwargs)
    if pca_n:
        cfg = override(cfg, pca_n=pca_n)
    return resolve(cfg, DERIVED)
