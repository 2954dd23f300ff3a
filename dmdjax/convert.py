"""Convert an EDM `EDMPrecond(DhariwalUNet)` state dict (torch names and layouts) to Flax params.

The checkpoint is expected as a flat mapping name -> numpy array, e.g. an `.npz` exported once from
`ema.state_dict()` of EDM's pickle (REFERENCE.md 6), so torch is never needed here. Names look like
`model.enc.32x32_block0.qkv.weight`. Mapping (see `dmdjax.nets.adm`):
- `model.<top>.<sub>.<leaf>` -> params['net'][<top with enc./dec. -> enc_/dec_>][<sub>][<leaf>];
- Linear weight [out, in] -> Dense kernel [in, out]; Conv weight [out, in, kh, kw] -> kernel [kh, kw, in, out];
- GroupNorm weight -> scale; biases unchanged; `map_label.weight` -> Dense kernel (no bias);
- `*.resample_filter` buffers are constants (the [1,1] filter) and are ignored.
"""
from __future__ import annotations

from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dmdjax.nets.adm import adm_denoiser, param_shapes

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_SHOW = 10   # how many offending keys an error message lists


def _torch_name(path: tuple, prefix: str) -> str:
    """Flax params path ('net', 'enc_32x32_block0', 'norm0', 'scale') -> 'model.enc.32x32_block0.norm0.weight'."""
    if path[0] != "net":
        raise AssertionError(f"unexpected params path {path}")
    top, *rest = path[1:-1]
    if top.startswith(("enc_", "dec_")):
        top = top.replace("_", ".", 1)
    return prefix + ".".join([top, *rest, _LEAF_TO_TORCH[path[-1]]])


def _torch_shape(flax_shape: tuple) -> tuple:
    """Flax kernel shape -> torch weight shape: [kh,kw,in,out] -> [out,in,kh,kw]; [in,out] -> [out,in]."""
    if len(flax_shape) == 4:
        kh, kw, cin, cout = flax_shape
        return (cout, cin, kh, kw)
    return tuple(reversed(flax_shape))


def _to_flax(array: np.ndarray) -> np.ndarray:
    """Torch layout -> Flax layout (inverse of `_torch_shape`)."""
    if array.ndim == 4:
        return np.transpose(array, (2, 3, 1, 0))
    if array.ndim == 2:
        return array.T
    return array


def _expected(config: dict, prefix: str) -> dict:
    """{torch name: (flax path, torch shape)} for every parameter of `adm_denoiser(config)`."""
    flat = traverse_util.flatten_dict(param_shapes(config))
    return {_torch_name(path, prefix): (path, _torch_shape(tuple(leaf.shape))) for path, leaf in flat.items()}


def state_dict_shapes(config: dict, prefix: str = "model.") -> dict:
    """{torch name: torch shape} that a checkpoint for `config` must hold (resample_filter buffers excluded).
    Computed from the Flax module with jax.eval_shape, so it allocates nothing."""
    return {name: shape for name, (_, shape) in _expected(config, prefix).items()}


def _listing(keys) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(repr(k) for k in keys[:_SHOW]) + more


def params_from_state_dict(state_dict: Mapping[str, np.ndarray], config: dict, prefix: str = "model."):
    """Flax params pytree for `adm_denoiser(config)` (i.e. Denoiser(DhariwalUNet(**config))) from a torch
    state dict of EDMPrecond(DhariwalUNet). `config` = EDM constructor arguments (as in the fixture meta).
    `prefix` is the name prefix of the UNet's entries ('model.' for EDMPrecond.state_dict()).

    Raises ValueError naming the offending keys on missing keys, unexpected keys and shape mismatches.
    """
    expected = _expected(config, prefix)
    given = {k: v for k, v in state_dict.items() if not k.endswith("resample_filter")}

    missing = set(expected) - set(given)
    if missing:
        raise ValueError(
            f"state dict is missing {len(missing)} key(s) that the config needs: {_listing(missing)}. "
            f"Fix: use the config the checkpoint was trained with (model_channels, channel_mult, num_blocks, "
            f"attn_resolutions, label_dim), or pass the right name prefix (now prefix={prefix!r}).")
    unexpected = set(given) - set(expected)
    if unexpected:
        hint = (" map_augment belongs to augment_dim > 0, which is not supported (DMD2 deletes it): drop it."
                if any("map_augment" in k for k in unexpected) else "")
        raise ValueError(
            f"state dict has {len(unexpected)} unexpected key(s): {_listing(unexpected)}. "
            f"Fix: the config probably does not match the checkpoint (e.g. label_dim, num_blocks, "
            f"attn_resolutions, channel_mult), or the keys carry another prefix than {prefix!r}.{hint}")

    flat = {}
    for name, (path, torch_shape) in expected.items():
        array = np.asarray(given[name])
        if tuple(array.shape) != torch_shape:
            raise ValueError(
                f"shape mismatch for {name!r}: expected {torch_shape} (torch layout), got {tuple(array.shape)}. "
                f"The config probably does not match the checkpoint (check model_channels, channel_mult, "
                f"channel_mult_emb, in_channels/out_channels, label_dim).")
        flat[path] = jnp.asarray(_to_flax(array.astype(np.float32)))
    return traverse_util.unflatten_dict(flat)


def load_state_dict(path) -> dict:
    """Read an `.npz` state dict (name -> array) into a plain dict of numpy arrays."""
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def edm_denoiser(state_dict: Mapping[str, np.ndarray], config: dict, dtype=jnp.float32,
                 prefix: str = "model.") -> Callable:
    """EDM checkpoint -> denoise_fn(x, sigma, class_labels=None) = D(x; sigma, y), jitted.

    x: (B,H,W,C) NHWC float32; sigma: (B,) or scalar; class_labels: (B, label_dim) one-hot or None
    (zero label vector, as EDM). Returns (B,H,W,C) float32. `dtype` is the interior computation dtype.
    The params are passed to the jitted function as arguments (not baked in as constants).
    """
    model = adm_denoiser(config, dtype=dtype)
    params = params_from_state_dict(state_dict, config, prefix=prefix)
    apply = jax.jit(lambda p, x, sigma, labels: model.apply({"params": p}, x, sigma, labels))

    def denoise_fn(x, sigma, class_labels=None):
        return apply(params, x, sigma, class_labels)
    return denoise_fn
