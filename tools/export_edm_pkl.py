"""One-off export of an EDM snapshot pickle (e.g. `edm-imagenet-64x64-cond-adm.pkl`) to an `.npz` state dict.

    python tools/export_edm_pkl.py --pkl=edm-imagenet-64x64-cond-adm.pkl --edm_dir=path/to/NVlabs/edm \\
        --out=edm-imagenet-64x64-cond-adm.npz

writes `<out>.npz` (torch name -> float32 array in torch layout: the EMA network's `state_dict()`, as DMD2 loads
it, without the constant `resample_filter` buffers) and `<out>.json` (the constructor arguments under "config",
sigma_data, the pkl's sha256). `dmdjax.convert.load_teacher(<out>.npz)` reads both (REFERENCE 6).

This script is the only place that needs torch and EDM's code: EDM pickles rebuild their classes from source
through `torch_utils.persistence`, so unpickling needs torch plus EDM's `torch_utils`/`dnnlib` (the repository
NVlabs/edm, given with --edm_dir). Neither is a dependency of dmdjax, and neither is installed in the
development environment, so this script has not been run there; run it once on any machine with torch.

If the network was built with augment_dim > 0, its `map_augment` layer is dropped and augment_dim recorded as 0,
as DMD2 does (REFERENCE 1.1): with no augmentation labels the layer is unused, so D(x; sigma, y) is unchanged.

DMD without the GAN term needs no ImageNet images, only this teacher (evidence: experiments/imagenet64.py).
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import pickle
import sys
from pathlib import Path

import numpy as np


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def constructor_kwargs(module) -> dict:
    """All constructor arguments of a `torch_utils.persistence` module, defaults filled in. Persistent classes
    record the arguments they were built with as `init_args`/`init_kwargs`; the class they decorate is the next
    one in the MRO and has the real signature."""
    bound = inspect.signature(type(module).__mro__[1].__init__).bind(module, *module.init_args,
                                                                      **module.init_kwargs)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k != "self"}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pkl", required=True, type=Path, help="EDM snapshot, e.g. edm-imagenet-64x64-cond-adm.pkl")
    parser.add_argument("--out", required=True, type=Path, help="output .npz (the sidecar gets the suffix .json)")
    parser.add_argument("--edm_dir", required=True, type=Path, help="a checkout of NVlabs/edm (torch_utils, dnnlib)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.edm_dir.resolve()))
    import torch  # noqa: F401  (only here: torch is not a dependency of dmdjax)

    with args.pkl.open("rb") as f:
        ema = pickle.load(f)["ema"]                       # EDMPrecond(DhariwalUNet), REFERENCE 6
    net = ema.model
    if type(net).__name__ != "DhariwalUNet":
        raise SystemExit(f"{args.pkl}: the network is {type(net).__name__}; dmdjax converts DhariwalUNet (ADM) only")
    unet = constructor_kwargs(net)
    config = {k: unet[k] for k in ("img_resolution", "in_channels", "out_channels", "label_dim", "model_channels",
                                   "channel_mult", "channel_mult_emb", "num_blocks", "attn_resolutions", "dropout",
                                   "label_dropout")}
    config = json.loads(json.dumps(config))                # tuples -> lists
    augment_dim = unet.get("augment_dim", 0)
    state_dict = {name: t.detach().to("cpu", torch.float32).numpy()
                  for name, t in ema.state_dict().items()
                  if not name.endswith("resample_filter") and ".map_augment." not in name}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out.with_suffix(".npz"), **state_dict)
    meta = {"config": config, "sigma_data": float(ema.sigma_data), "sigma_min": float(ema.sigma_min),
            "sigma_max": float(ema.sigma_max), "dropped_map_augment_dim": augment_dim, "prefix": "model.",
            "layout": "torch state_dict names and layouts (Linear [out,in], Conv [out,in,kh,kw]), float32",
            "source": args.pkl.name, "source_sha256": sha256(args.pkl),
            "num_parameters": int(sum(a.size for a in state_dict.values()))}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {args.out.with_suffix('.npz')} ({len(state_dict)} tensors, {meta['num_parameters']:,} "
          f"parameters) and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main(sys.argv[1:])
