"""Denoiser networks: `Denoiser` (EDM preconditioning) around a raw net (`MLP`, `DhariwalUNet`); `build` makes one
from a name and plain values, `denoise_fn` closes it over its params."""
import jax.numpy as jnp

from dmdjax.nets.denoiser import Denoiser, denoise_fn
from dmdjax.nets.mlp import MLP
from dmdjax.nets.adm import DhariwalUNet

__all__ = ["Denoiser", "denoise_fn", "MLP", "DhariwalUNet", "NETS", "build"]

NETS = ("mlp", "adm")


def build(net: str, net_kwargs: dict, compute_dtype: str = "float32") -> Denoiser:
    """The Denoiser of a config's `net` ("mlp": `MLP(**net_kwargs)`, "adm": EDM's ADM from its constructor
    arguments). In bfloat16 only the network interior runs in bf16: preconditioning, losses, optimiser and master
    weights stay float32 (as DMD2's --use_fp16, REFERENCE 1.6)."""
    dtype = jnp.dtype(compute_dtype)
    if net == "mlp":
        return Denoiser(MLP(**net_kwargs, dtype=dtype))
    if net == "adm":
        from dmdjax.nets.adm import adm_denoiser
        return adm_denoiser(net_kwargs, dtype=dtype)
    raise ValueError(f"unknown net {net!r}; choose one of {', '.join(NETS)}")
