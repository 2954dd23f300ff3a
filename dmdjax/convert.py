"""Convert an EDM `EDMPrecond(DhariwalUNet)` state dict (torch names and layouts) to Flax params.

The checkpoint is expected as a flat mapping name -> numpy array, e.g. an `.npz` exported once from
`ema.state_dict()` of EDM's pickle (REFERENCE.md 6), so torch is never needed here. Names look like
`model.enc.32x32_block0.qkv.weight`. Mapping (see `dmdjax.nets.adm`):
- `model.<top>.<sub>.<leaf>` -> params['net'][<top with enc./dec. -> enc_/dec_>][<sub>][<leaf>];
- Linear weight [out, in] -> Dense kernel [in, out]; Conv weight [out, in, kh, kw] -> kernel [kh, kw, in, out];
- GroupNorm weight -> scale; biases unchanged; `map_label.weight` -> Dense kernel (no bias);
- `*.resample_filter` buffers are constants (the [1,1] filter) and are ignored.

`load_teacher(npz)` is the one call for a teacher exported by `tools/export_edm_pkl.py` (`.npz` + JSON sidecar
with the constructor arguments); `state_dict_from_params` is the inverse mapping (Flax -> torch names/layouts).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dmdjax import diffusion
from dmdjax.nets import denoise_fn
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


def _to_torch(array: np.ndarray) -> np.ndarray:
    """Flax layout -> torch layout (inverse of `_to_flax`)."""
    if array.ndim == 4:
        return np.transpose(array, (3, 2, 0, 1))
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


def state_dict_from_params(params, prefix: str = "model.") -> dict:
    """Inverse of `params_from_state_dict`: Flax params of `adm_denoiser(config)` -> {torch name: float32 array
    in torch layout}, i.e. the export format (no resample_filter buffers)."""
    return {_torch_name(path, prefix): np.ascontiguousarray(_to_torch(np.asarray(leaf, np.float32)))
            for path, leaf in traverse_util.flatten_dict(params).items()}


_EXPORT_FIX = "Fix: export the teacher once with tools/export_edm_pkl.py (see its docstring)."


def load_state_dict(path) -> dict:
    """Read an `.npz` state dict (name -> array) into a plain dict of numpy arrays.
    Raises FileNotFoundError / ValueError naming the file if it is missing or not a readable .npz."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no state dict at {path}. {_EXPORT_FIX}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npz state dict ({type(e).__name__}: {e}). The file is "
                         f"probably truncated or not an export. {_EXPORT_FIX}") from e


def sidecar_path(npz_path) -> Path:
    """The JSON sidecar `tools/export_edm_pkl.py` writes next to `<name>.npz`: `<name>.json`."""
    return Path(npz_path).with_suffix(".json")


def read_config(json_path) -> dict:
    """EDM constructor arguments from a sidecar JSON ({"config": {...}, ...}, as the exporter and the fixture
    meta files write). Checks sigma_data (EDMPrecond's) equals the 0.5 every Denoiser here uses."""
    json_path = Path(json_path)
    try:
        meta = json.loads(json_path.read_text())
        config = dict(meta["config"])
    except FileNotFoundError:
        raise FileNotFoundError(f"no config sidecar at {json_path}. Fix: pass the config explicitly, or keep "
                                f"the JSON that tools/export_edm_pkl.py wrote next to the .npz.") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{json_path} is not a config sidecar (a JSON object with a 'config' entry): "
                         f"{type(e).__name__}: {e}. {_EXPORT_FIX}") from e
    if meta.get("sigma_data", diffusion.SIGMA_DATA) != diffusion.SIGMA_DATA:
        raise ValueError(f"{json_path}: sigma_data = {meta['sigma_data']}, but the EDM preconditioning here uses "
                         f"{diffusion.SIGMA_DATA} (REFERENCE 2.1); this checkpoint cannot be used as is.")
    return config


def load_teacher(npz_path, config: dict | None = None, dtype=jnp.float32, prefix: str = "model."):
    """An exported EDM teacher -> (model, params): `model` = adm_denoiser(config, dtype) (D(x; sigma, y),
    REFERENCE 2.1), `params` its Flax params (float32). `config` defaults to the sidecar `<name>.json`.

    Raises FileNotFoundError / ValueError naming the file and the fix when the file is missing, corrupt, or
    does not match the config (missing / unexpected keys, shape mismatches).
    """
    npz_path = Path(npz_path)
    source = "the given config"
    if config is None:
        config, source = read_config(sidecar_path(npz_path)), f"the config in {sidecar_path(npz_path)}"
    state_dict = load_state_dict(npz_path)
    try:
        params = params_from_state_dict(state_dict, config, prefix=prefix)
    except ValueError as e:
        raise ValueError(f"{npz_path} does not match {source}: {e}") from e
    return adm_denoiser(config, dtype=dtype), params


def edm_denoiser(state_dict: Mapping[str, np.ndarray], config: dict, dtype=jnp.float32,
                 prefix: str = "model.") -> Callable:
    """EDM checkpoint -> denoise_fn(x, sigma, class_labels=None) = D(x; sigma, y), jitted.

    x: (B,H,W,C) NHWC float32; sigma: (B,) or scalar; class_labels: (B, label_dim) one-hot or None
    (zero label vector, as EDM). Returns (B,H,W,C) float32. `dtype` is the interior computation dtype.
    The params are passed to the jitted function as arguments (not baked in as constants).
    """
    model = adm_denoiser(config, dtype=dtype)
    params = params_from_state_dict(state_dict, config, prefix=prefix)
    apply = jax.jit(lambda p, x, sigma, labels: denoise_fn(model, p)(x, sigma, labels))

    def denoise(x, sigma, class_labels=None):
        return apply(params, x, sigma, class_labels)
    return denoise
