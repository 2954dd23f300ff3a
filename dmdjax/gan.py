"""DMD2's GAN term (REFERENCE 1.7; paper Sec. 4.1.1): a classifier head on the fake score's bottleneck.

The head reads `Denoiser(..., return_bottleneck=True)` of the fake score at a noised image and returns one
realism logit per sample. Its params live beside the fake score's (the "guidance" params
{'fake': ..., 'cls': ...} of `dmdjax.distill`), are trained by the fake-score optimiser, and the classifier loss
also back-propagates into the fake network's encoder. The teacher's and generator's params trees are untouched.

    classifier (guidance) loss  = softplus(D(x_fake)) + softplus(-D(x_real)), weighted 1e-2 (cls_loss_weight)
    generator loss              = softplus(-D(G(z))),                         weighted 3e-3 (gen_cls_loss_weight)

D(x) = head(bottleneck_fake(x + sigma eps, sigma)), sigma = table[randint(0, max_timestep)] drawn independently
for each call and sample (DMD2's --diffusion_gan --diffusion_gan_max_timestep 1000).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dmdjax import diffusion
from dmdjax.nets.adm import GroupNorm, _bias_init, _kernel_init


class ConvHead(nn.Module):
    """DMD2's `cls_pred_branch` for an ADM bottleneck (B, r, r, C) -> (B,) logits (REFERENCE 1.7).

    Conv 4x4 stride 2 pad 1 (r -> r/2) -> GroupNorm(32) -> SiLU -> Conv (r/2)x(r/2) stride r/2 (-> 1x1) ->
    GroupNorm(32) -> SiLU -> Conv 1x1 -> 1 logit; all convs C channels. For DMD2's 8x8 bottleneck the second conv
    is its 4x4 stride 4; a 4x4 bottleneck (the paper's MNIST net) gets 2x2 stride 2. GroupNorm has
    min(32, C) groups (torch's GroupNorm(32, C) for C >= 32), eps 1e-5; init is torch's default, as DMD2's.
    """

    @nn.compact
    def __call__(self, h):
        b, r, _, c = h.shape
        if r < 2 or r % 2:
            raise ValueError(f"ConvHead needs an even bottleneck resolution >= 2, got {h.shape}")
        norm = lambda name: GroupNorm(num_groups=32, min_channels_per_group=1, name=name)
        conv = lambda k, s, p, cout, name: nn.Conv(cout, (k, k), strides=(s, s), padding=((p, p), (p, p)), name=name,
                                                   kernel_init=_kernel_init, bias_init=_bias_init(k * k * c))
        h = nn.silu(norm("norm0")(conv(4, 2, 1, c, "conv0")(h)))
        h = nn.silu(norm("norm1")(conv(r // 2, r // 2, 0, c, "conv1")(h)))
        return conv(1, 1, 0, 1, "conv2")(h).reshape(b)


class MLPHead(nn.Module):
    """Head for the toys' MLP bottleneck (its last hidden layer) (B, C) -> (B,): Dense(width) -> SiLU -> Dense(1)."""
    width: int = 256

    @nn.compact
    def __call__(self, h):
        h = nn.silu(nn.Dense(self.width)(h))
        return nn.Dense(1)(h).reshape(h.shape[0])


def make_head(bottleneck_shape: tuple[int, ...], width: int = 256) -> nn.Module:
    """The head for a bottleneck of shape (B, r, r, C) (ADM: ConvHead) or (B, C) (MLP: MLPHead)."""
    if len(bottleneck_shape) == 4:
        return ConvHead()
    if len(bottleneck_shape) == 2:
        return MLPHead(width)
    raise ValueError(f"no GAN head for bottleneck features of shape {bottleneck_shape}")


def bottleneck_shape(model, sample_shape: tuple[int, ...], label_dim: int = 0, batch: int = 2) -> tuple[int, ...]:
    """Shape (batch, ...) of `model`'s bottleneck features for samples of `sample_shape`; evaluates shapes only."""
    x = jnp.zeros((batch,) + tuple(sample_shape))
    labels = jnp.zeros((batch, label_dim)) if label_dim else None
    out = jax.eval_shape(lambda k: model.init_with_output(k, x, jnp.ones(batch), labels, return_bottleneck=True)[0],
                         jax.random.PRNGKey(0))
    return tuple(out.shape)


def init_head(head: nn.Module, key, shape: tuple[int, ...]):
    """Head params for bottleneck features of `shape`."""
    return head.init(key, jnp.zeros(shape))["params"]


def logits(model, head, fake_params, cls_params, x, sigma, eps, labels=None):
    """D(x) = head(bottleneck of the fake score at x_t = x + sigma eps, sigma). x: (B, ...), sigma: (B,) -> (B,).

    Gradients reach x (generator term), the fake network's encoder and the head (classifier term); callers stop
    the gradient where DMD2 detaches."""
    x_t = x + diffusion.expand(sigma, x) * eps
    h = model.apply({"params": fake_params}, x_t, sigma, labels, return_bottleneck=True)
    return head.apply({"params": cls_params}, h)


def classifier_loss(logits_real, logits_fake):
    """Non-saturating discriminator loss: mean softplus(D(fake)) + mean softplus(-D(real)) (DMD2's
    compute_guidance_clean_cls_loss). logits: (B,) -> scalar."""
    return jnp.mean(jax.nn.softplus(logits_fake)) + jnp.mean(jax.nn.softplus(-logits_real))


def generator_loss(logits_fake):
    """Non-saturating generator loss mean softplus(-D(G(z))) (DMD2's compute_generator_clean_cls_loss)."""
    return jnp.mean(jax.nn.softplus(-logits_fake))
