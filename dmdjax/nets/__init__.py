"""Denoiser networks: `Denoiser` (EDM preconditioning) around a raw net (`MLP`, `DhariwalUNet`)."""
from dmdjax.nets.denoiser import Denoiser, denoise_fn
from dmdjax.nets.mlp import MLP
from dmdjax.nets.adm import DhariwalUNet
