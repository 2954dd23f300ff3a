"""EDM's ADM network (`DhariwalUNet`, NVlabs/edm training/networks.py) in Flax linen, NHWC.

Used as the raw network F inside `Denoiser` for the MNIST teacher (C_base 64) and the converted ImageNet-64
teacher (C_base 192). Structure and constants follow REFERENCE.md 2.3 / 6 exactly, so that EDM checkpoints
convert 1:1 (`dmdjax.convert`):
- positional embedding of c_noise is [cos, sin] (cos first), 1e-4^(i/half) frequencies;
- GroupNorm groups = min(32, C // 4), eps 1e-5, biased variance, statistics in float32;
- qkv output channels interleaved per head as (head, channel, q/k/v); heads = C // 64;
- down = 2x2 average, up = nearest neighbour, both applied before conv0 and before the skip path;
- skip_scale 1.0; conv1, proj and out_conv are zero-initialised, everything else is EDM's
  kaiming-uniform(sqrt(1/3)) (= U(+-1/sqrt(fan_in)) for weights and biases); map_label is N(0, 1), no bias.

Parameter names mirror the torch state dict with '.' between enc/dec and the block replaced by '_':
torch `model.enc.32x32_block0.norm0.weight` <-> flax `net/enc_32x32_block0/norm0/scale`.

`dtype` is the computation dtype of the interior (e.g. jnp.bfloat16); params stay float32, the noise/label
mapping network, GroupNorm statistics and the attention softmax run in float32, the output is float32.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dmdjax.nets.denoiser import Denoiser

Dtype = Any

# ----------------------------------------------------------------------------------------------------------
# Initialisers (EDM: kaiming_uniform with init_weight = init_bias = sqrt(1/3), i.e. torch's default init).

_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")   # U(+-1/sqrt(fan_in))
_zeros = nn.initializers.zeros


def _bias_init(fan_in: int):
    """U(+-1/sqrt(fan_in)) for a bias of a layer with `fan_in` inputs (EDM's bias init)."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def _dense(features: int, fan_in: int, name: str, dtype: Dtype = jnp.float32, use_bias: bool = True):
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32, name=name,
                    kernel_init=_kernel_init, bias_init=_bias_init(fan_in))


def _conv(features: int, kernel: int, fan_in: int, name: str, dtype: Dtype, zero: bool = False):
    """Stride-1 'same' conv (torch Conv2d, padding kernel // 2). fan_in = kernel^2 * in_channels."""
    p = kernel // 2
    return nn.Conv(features, (kernel, kernel), padding=((p, p), (p, p)), dtype=dtype, param_dtype=jnp.float32,
                   name=name, kernel_init=_zeros if zero else _kernel_init,
                   bias_init=_zeros if zero else _bias_init(fan_in))


# ----------------------------------------------------------------------------------------------------------
# Parameter-free pieces.

def positional_embedding(c_noise, num_channels: int, max_positions: float = 10000.0):
    """EDM PositionalEmbedding (endpoint=False): c_noise (B,) -> (B, num_channels) = [cos(c f), sin(c f)],
    f_i = (1 / max_positions)^(i / (num_channels / 2)), i < num_channels / 2. Float32."""
    half = num_channels // 2
    freqs = (1.0 / max_positions) ** (jnp.arange(half, dtype=jnp.float32) / half)
    arg = jnp.asarray(c_noise, jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(arg), jnp.sin(arg)], axis=-1)


def downsample(x):
    """2x2 average pooling (EDM's [1,1] resample filter, stride 2): (B,H,W,C) -> (B,H/2,W/2,C)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample(x):
    """Nearest-neighbour 2x upsampling (EDM's transposed [1,1] filter x4): (B,H,W,C) -> (B,2H,2W,C)."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


def attention(q, k, v):
    """Softmax attention over pixels: q, k, v (B, heads, L, ch) with the 1/sqrt(ch) scale already in q or k
    -> (B, L, heads * ch), output channel = head * ch + channel (EDM's AttentionOp order). Logits and softmax
    statistics in float32 (as EDM). The softmax is normalised after the value product ((B, L, ch) divisions
    instead of (B, L, L)): the same arithmetic up to rounding, one pass less over the L x L weights. Computed in
    blocks of samples with at most 2^22 logits each (16 MiB: the softmax passes stay in cache); the blocks are
    independent, so the result is identical."""
    def block(q, k, v):
        logits = jnp.einsum("bnqc,bnkc->bnqk", q, k, preferred_element_type=jnp.float32)
        e = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
        out = jnp.einsum("bnqk,bnkc->bnqc", e.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return out / jnp.sum(e, axis=-1, keepdims=True)
    b = q.shape[0]
    step = max(1, min(b, (1 << 22) // max(1, q.shape[1] * q.shape[2] * k.shape[2])))
    out = jnp.concatenate([block(q[i:i + step], k[i:i + step], v[i:i + step]) for i in range(0, b, step)], axis=0)
    b, n, l, c = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, l, n * c).astype(v.dtype)


class QKV(nn.Module):
    """EDM's qkv 1x1 conv (params `kernel` (1, 1, C, 3C), `bias` (3C,), output channels interleaved as
    (head, channel, q/k/v)) applied as three projections with the weights, not the activations, reordered:
    x (B, H, W, C) -> q, k, v (B, heads, H W, C / heads), k already scaled by 1/sqrt(C / heads)."""
    num_heads: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        ch = c // self.num_heads
        kernel = self.param("kernel", _kernel_init, (1, 1, c, 3 * c), jnp.float32)
        bias = self.param("bias", _bias_init(c), (3 * c,), jnp.float32)
        kernel = kernel.reshape(c, self.num_heads, ch, 3)
        bias = bias.reshape(self.num_heads, ch, 3)
        scale = jnp.asarray([1.0, 1.0 / np.sqrt(ch), 1.0], jnp.float32)       # EDM: k / sqrt(ch)
        kernel, bias = (kernel * scale).astype(self.dtype), (bias * scale).astype(self.dtype)
        x = x.reshape(b, h * w, c).astype(self.dtype)
        return tuple(jnp.einsum("blc,cnd->bnld", x, kernel[..., i]) + bias[None, :, None, :, i] for i in range(3))


# ----------------------------------------------------------------------------------------------------------
# Modules.

class GroupNorm(nn.Module):
    """EDM GroupNorm: (B,...,C) -> same shape and dtype; groups = min(32, C // 4), biased variance, eps 1e-5.

    Statistics and normalisation are computed in float32 whatever the input dtype.
    """
    eps: float = 1e-5
    num_groups: int = 32
    min_channels_per_group: int = 4

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        g = min(self.num_groups, c // self.min_channels_per_group)
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        # Per-channel sums over the spatial axes, then over the channels of a group: reductions XLA:CPU runs
        # ~2x faster (forward and backward) than one reduction over (H, W, C / G) of a 5-D view (docs/notebook.md,
        # Issue 8).
        x32 = x.astype(jnp.float32)
        spatial = tuple(range(1, x.ndim - 1))
        n = np.prod(x.shape[1:-1]) * (c // g)
        per_group = lambda t: jnp.repeat(t, c // g, axis=-1).reshape(t.shape[:1] + (1,) * len(spatial) + (c,))
        group_sum = lambda t: jnp.sum(t, axis=spatial).reshape(-1, g, c // g).sum(-1)         # (B, G)
        centred = x32 - per_group(group_sum(x32) / n)
        var = group_sum(jnp.square(centred)) / n                                               # biased
        y = centred * (per_group(jax.lax.rsqrt(var + self.eps)) * scale)
        return (y + bias).astype(x.dtype)


class UNetBlock(nn.Module):
    """EDM UNetBlock (adaptive_scale=True, resample_filter [1,1], skip_scale 1).

    x (B,H,W,Cin), emb (B,E) -> (B,H',W',out_channels); H' = 2H if up, H/2 if down.
    norm0 -> SiLU -> [resample] -> conv0; (scale, shift) = affine(emb); SiLU(shift + norm1(x) (scale + 1))
    -> dropout -> conv1 (zero-init) -> + skip([resample] orig, 1x1 conv if Cin != Cout) -> x skip_scale;
    then, if attention with heads = out_channels // channels_per_head > 0:
    x + proj(attention(qkv(norm2(x)))) -> x skip_scale.
    """
    out_channels: int
    up: bool = False
    down: bool = False
    attention: bool = False
    channels_per_head: int = 64
    dropout: float = 0.0
    skip_scale: float = 1.0
    eps: float = 1e-5
    dtype: Dtype = jnp.float32

    def _resample(self, x):
        if self.up:
            return upsample(x)
        if self.down:
            return downsample(x)
        return x

    @nn.compact
    def __call__(self, x, emb, train: bool = False):
        cin, cout = x.shape[-1], self.out_channels
        orig = x
        x = nn.silu(GroupNorm(eps=self.eps, name="norm0")(x))
        x = _conv(cout, 3, 9 * cin, "conv0", self.dtype)(self._resample(x))

        params = _dense(2 * cout, emb.shape[-1], "affine", self.dtype)(emb)[:, None, None, :]
        scale, shift = jnp.split(params.astype(x.dtype), 2, axis=-1)
        x = nn.silu(shift + GroupNorm(eps=self.eps, name="norm1")(x) * (scale + 1))

        if self.dropout > 0:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = _conv(cout, 3, 9 * cout, "conv1", self.dtype, zero=True)(x)

        skip = self._resample(orig)
        if cout != cin:
            skip = _conv(cout, 1, cin, "skip", self.dtype)(skip)
        x = (x + skip) * self.skip_scale

        num_heads = cout // self.channels_per_head if self.attention else 0
        if num_heads:
            q, k, v = QKV(num_heads, self.dtype, name="qkv")(GroupNorm(eps=self.eps, name="norm2")(x))
            a = attention(q, k, v).reshape(x.shape)
            x = (_conv(cout, 1, cout, "proj", self.dtype, zero=True)(a) + x) * self.skip_scale
        return x


class DhariwalUNet(nn.Module):
    """EDM's DhariwalUNet (ADM), the raw network F(x_in, c_noise, labels).

    __call__(x (B,H,W,in_channels) float32, c_noise (B,), labels (B,label_dim) one-hot or None, train)
    -> (B,H,W,out_channels) float32. labels=None with label_dim > 0 means the zero vector (as EDM);
    labels are ignored when label_dim == 0 (as EDMPrecond). Dropout / label dropout only when train=True
    (rng stream 'dropout'). Attention heads = channels // 64 (EDM's channels_per_head), so blocks with fewer
    than 64 channels get no attention even at an attention resolution; `dec_<res>_in0` always has attention.
    `return_bottleneck=True` returns the encoder output instead (DMD2's GAN head input, REFERENCE 1.7): e.g.
    (B, 8, 8, 768) for ImageNet-64, (B, 4, 4, 256) for the paper's MNIST net, (B, 8, 8, 64) for the cpu one.
    """
    img_resolution: int
    in_channels: int
    out_channels: int | None = None          # None -> in_channels (EDMPrecond passes img_channels)
    label_dim: int = 0
    model_channels: int = 192
    channel_mult: Sequence[int] = (1, 2, 3, 4)
    channel_mult_emb: int = 4
    num_blocks: int = 3
    attn_resolutions: Sequence[int] = (32, 16, 8)
    dropout: float = 0.10
    label_dropout: float = 0.0
    dtype: Dtype = jnp.float32

    def _block(self, out_channels, name, **kw):
        return UNetBlock(out_channels, dropout=self.dropout, dtype=self.dtype, name=name, **kw)

    @nn.compact
    def __call__(self, x, c_noise, labels=None, train: bool = False, return_bottleneck: bool = False):
        mc = self.model_channels
        emb_ch = mc * self.channel_mult_emb

        # Mapping: noise embedding (+ class embedding) -> emb (B, emb_ch), float32.
        emb = positional_embedding(jnp.reshape(c_noise, (-1,)), mc)
        emb = nn.silu(_dense(emb_ch, mc, "map_layer0")(emb))
        emb = _dense(emb_ch, emb_ch, "map_layer1")(emb)
        if self.label_dim:
            if labels is None:
                labels = jnp.zeros((x.shape[0], self.label_dim), jnp.float32)
            labels = jnp.asarray(labels, jnp.float32)
            if labels.ndim != 2 or labels.shape[-1] != self.label_dim:
                raise ValueError(f"labels must be one-hot of shape (batch, {self.label_dim}), got {labels.shape}")
            if train and self.label_dropout:
                keep = jax.random.uniform(self.make_rng("dropout"), (labels.shape[0], 1)) >= self.label_dropout
                labels = labels * keep.astype(labels.dtype)
            map_label = nn.Dense(emb_ch, use_bias=False, name="map_label",
                                 kernel_init=nn.initializers.normal(1.0))      # EDM: kaiming_normal * sqrt(label_dim)
            emb = emb + map_label(labels)
        emb = nn.silu(emb)

        # Encoder; every output is kept as a skip.
        x = jnp.asarray(x, self.dtype)
        skips = []
        cout = self.in_channels
        for level, mult in enumerate(self.channel_mult):
            res = self.img_resolution >> level
            if level == 0:
                cout = mc * mult
                x = _conv(cout, 3, 9 * x.shape[-1], f"enc_{res}x{res}_conv", self.dtype)(x)
            else:
                x = self._block(cout, f"enc_{res}x{res}_down", down=True)(x, emb, train)
            skips.append(x)
            for idx in range(self.num_blocks):
                cout = mc * mult
                x = self._block(cout, f"enc_{res}x{res}_block{idx}",
                                attention=res in self.attn_resolutions)(x, emb, train)
                skips.append(x)
        if return_bottleneck:   # DMD2's return_bottleneck: the encoder output (B, res/2^(L-1), same, C_last)
            return x.astype(jnp.float32)

        # Decoder; every `block{idx}` takes concat(x, skip).
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            res = self.img_resolution >> level
            if level == len(self.channel_mult) - 1:
                x = self._block(cout, f"dec_{res}x{res}_in0", attention=True)(x, emb, train)
                x = self._block(cout, f"dec_{res}x{res}_in1")(x, emb, train)
            else:
                x = self._block(cout, f"dec_{res}x{res}_up", up=True)(x, emb, train)
            for idx in range(self.num_blocks + 1):
                x = jnp.concatenate([x, skips.pop()], axis=-1)
                cout = mc * mult
                x = self._block(cout, f"dec_{res}x{res}_block{idx}",
                                attention=res in self.attn_resolutions)(x, emb, train)

        x = nn.silu(GroupNorm(name="out_norm")(x))
        out_channels = self.in_channels if self.out_channels is None else self.out_channels
        x = _conv(out_channels, 3, 9 * cout, "out_conv", self.dtype, zero=True)(x)
        return x.astype(jnp.float32)


# ----------------------------------------------------------------------------------------------------------
# Paper configurations (EDM constructor arguments) and construction helpers.

def mnist_config() -> dict:
    """The paper's MNIST ADM (App. D): 32x32x1, unconditional, C_base 64. 31,118,593 parameters."""
    return dict(img_resolution=32, in_channels=1, label_dim=0, model_channels=64, channel_mult=[1, 2, 3, 4],
                channel_mult_emb=4, num_blocks=3, attn_resolutions=[32, 16, 8], dropout=0.0)


def imagenet64_config() -> dict:
    """EDM's ImageNet-64 ADM as rebuilt by DMD2 (REFERENCE 1.1): 1000 classes, C_base 192, dropout 0.
    295,899,267 parameters."""
    return dict(img_resolution=64, in_channels=3, label_dim=1000, model_channels=192, channel_mult=[1, 2, 3, 4],
                channel_mult_emb=4, num_blocks=3, attn_resolutions=[32, 16, 8], dropout=0.0)


_FIELDS = ("img_resolution", "in_channels", "out_channels", "label_dim", "model_channels", "channel_mult",
           "channel_mult_emb", "num_blocks", "attn_resolutions", "dropout", "label_dropout")


def unet_kwargs(config: dict) -> dict:
    """EDM constructor arguments -> DhariwalUNet fields: out_channels defaults to in_channels, lists become
    tuples (hashable module fields), augment_dim must be 0 (or absent); unknown keys raise ValueError."""
    cfg = dict(config)
    if cfg.pop("augment_dim", 0):
        raise ValueError("augment_dim > 0 (EDM's map_augment) is not supported; DMD2 drops it (augment_dim=0)")
    unknown = sorted(set(cfg) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown DhariwalUNet config key(s) {unknown}; expected a subset of {list(_FIELDS)}")
    cfg.setdefault("out_channels", cfg["in_channels"])
    for key in ("channel_mult", "attn_resolutions"):
        if key in cfg:
            cfg[key] = tuple(int(v) for v in cfg[key])
    return cfg


def adm_denoiser(config: dict, dtype: Dtype = jnp.float32) -> Denoiser:
    """Denoiser(DhariwalUNet(**config)) from a dict of EDM constructor arguments (see `unet_kwargs`)."""
    return Denoiser(DhariwalUNet(**unet_kwargs(config), dtype=dtype))


def param_shapes(config: dict):
    """Abstract params pytree (jax.ShapeDtypeStruct leaves) of `adm_denoiser(config)`; allocates nothing."""
    model = adm_denoiser(config)
    res, ch = int(config["img_resolution"]), int(config["in_channels"])
    x = jax.ShapeDtypeStruct((1, res, res, ch), jnp.float32)
    sigma = jax.ShapeDtypeStruct((1,), jnp.float32)
    return jax.eval_shape(lambda k, x, s: model.init(k, x, s), jax.random.key(0), x, sigma)["params"]


def num_params(tree) -> int:
    """Total number of scalars in a params pytree (concrete or abstract)."""
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree_util.tree_leaves(tree)))
