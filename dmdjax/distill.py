"""One-step DMD distillation as in DMD2's EDM code (REFERENCE 1; paper Sec. 2.2, Eq. 2-3, App. D).

Generator G(z) = D_theta(80 z; 80) and fake score D_psi both start as copies of the teacher D. Every iteration
the fake score takes a denoising step on detached generator samples; when `step % 5 == 0` the generator first
takes a step on the normalised distribution-matching loss. Both steps use the same, pre-update generator
samples, as DMD2 does. The generator's loss is a dict of weighted terms (`dm` now; DMD2's GAN term and DMD1's
regression term slot in beside it), and so is the fake-score loss.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from dmdjax import diffusion, parallel
from dmdjax.train_state import TrainState, apply_gradients, make_optimizer


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    iterations: int = 50_000
    batch: int = 32
    lr_gen: float = 2e-6
    lr_fake: float = 2e-6
    warmup: int = 500                # iterations (DMD2 steps both schedulers every iteration)
    weight_decay: float = 0.01
    clip_norm: float = 10.0
    gen_every: int = 5               # dfake_gen_update_ratio
    conditioning_sigma: float = diffusion.SIGMA_MAX
    num_timesteps: int = diffusion.NUM_TRAIN_TIMESTEPS
    dm_min_index: int = diffusion.DM_MIN_INDEX
    dm_max_index: int = diffusion.DM_MAX_INDEX
    ckpt_every: int = 1000
    chunk: int = 100

    def optimizers(self):
        """(generator, fake-score) optimisers. The generator updates once per `gen_every` iterations, so its
        warm-up, counted in its own updates, is warmup / gen_every: the lr at iteration i is min(1, i/warmup) lr
        for both, as DMD2's per-iteration schedulers give."""
        common = dict(weight_decay=self.weight_decay, clip_norm=self.clip_norm)
        gen = make_optimizer(self.lr_gen, warmup_steps=self.warmup // self.gen_every, **common)
        fake = make_optimizer(self.lr_fake, warmup_steps=self.warmup, **common)
        return gen, fake


@flax.struct.dataclass
class DMDState:
    step: jnp.ndarray      # distillation iterations done
    gen: TrainState        # generator G_theta
    fake: TrainState       # fake score s_psi


def init_state(teacher_params, cfg: DistillConfig) -> DMDState:
    """Generator and fake score both start from the teacher's weights (REFERENCE 1.1)."""
    gen_tx, fake_tx = cfg.optimizers()
    copy = lambda p: jax.tree.map(jnp.array, p)
    return DMDState(step=jnp.zeros((), jnp.int32), gen=TrainState.create(copy(teacher_params), gen_tx),
                    fake=TrainState.create(copy(teacher_params), fake_tx))


def generate(model, gen_params, z, labels=None, sigma: float = diffusion.SIGMA_MAX):
    """G(z) = D(sigma z; sigma, y) with sigma = 80; z: (B, ...) unit normal -> (B, ...)."""
    return model.apply({"params": gen_params}, sigma * z, jnp.full((z.shape[0],), sigma), labels)


def dm_gradient(real_fn, fake_fn, x, sigma, eps, labels=None):
    """DMD2's normalised distribution-matching gradient (REFERENCE 1.4), per sample, with no gradient flow.

    grad = (D_fake(x_t) - D_real(x_t)) / mean|x - D_real(x_t)|, x_t = x + sigma eps, NaNs zeroed. This is
    w(t)(s_psi - s) of Eq. 3 with w = sigma^2 / mean|x - D_real|. x: (B, ...), sigma: (B,).
    """
    x = jax.lax.stop_gradient(x)
    x_t = x + diffusion.expand(sigma, x) * eps
    d_real, d_fake = real_fn(x_t, sigma, labels), fake_fn(x_t, sigma, labels)
    axes = tuple(range(1, x.ndim))
    norm = jnp.mean(jnp.abs(x - d_real), axis=axes, keepdims=True)
    return jax.lax.stop_gradient(jnp.nan_to_num((d_fake - d_real) / norm))


def dm_loss(x, grad):
    """0.5 * MSE(x, stop_gradient(x - grad)), mean over all B*C*H*W elements: d loss / d x = grad / x.size."""
    return 0.5 * jnp.mean((x - jax.lax.stop_gradient(x - grad)) ** 2)


def fake_score_loss(fake_fn, x, sigma, eps, labels=None):
    """Denoising loss of the fake score on detached samples, EDM weighting 1/sigma^2 + 1/sigma_data^2 (REF 1.5)."""
    x = jax.lax.stop_gradient(x)
    s = diffusion.expand(sigma, x)
    return jnp.mean(diffusion.loss_weight(s) * (fake_fn(x + s * eps, sigma, labels) - x) ** 2)


def make_step(model, cfg: DistillConfig, key, label_dim: int = 0, sample_shape: tuple[int, ...] = (), mesh=None):
    """One DMD round `(state, teacher_params) -> (state, metrics)`: `gen_every` iterations starting at a
    multiple of `gen_every`, i.e. one iteration with a generator update followed by gen_every - 1 without.
    Metrics have a leading axis of length gen_every: `dm_loss` every iteration (Fig. 4), `fake_loss`,
    `gen_update` (1.0 on generator steps).

    The schedule is unrolled in Python rather than branched with `lax.cond` or scanned: XLA:CPU runs a
    convolution's backward pass inside a conditional ~15x and inside a loop ~7x slower than at the top level
    (BUILD_NOTES.md). The arithmetic is identical to DMD2's `step % gen_every == 0` branching.
    """
    iteration = make_iteration(model, cfg, key, label_dim, sample_shape, mesh)

    def round_fn(state: DMDState, teacher_params: Any):
        metrics = []
        for i in range(cfg.gen_every):   # unrolled: no control flow around backward passes (see above)
            state, m = iteration(state, teacher_params, update_generator=(i == 0))
            metrics.append(m)
        return state, jax.tree.map(lambda *ms: jnp.stack(ms), *metrics)

    return round_fn


def make_iteration(model, cfg: DistillConfig, key, label_dim: int = 0, sample_shape: tuple[int, ...] = (), mesh=None):
    """A single DMD iteration `(state, teacher_params, update_generator: bool) -> (state, metrics)`.

    One generator forward serves both updates; the fake score then steps on the same, pre-update samples.
    `update_generator` is a Python bool (DMD2 updates the generator when step % gen_every == 0).
    """
    parallel.check_batch(cfg.batch, mesh)
    gen_tx, fake_tx = cfg.optimizers()
    table = jnp.asarray(diffusion.sigma_table(cfg.num_timesteps))
    apply = lambda params: (lambda x, sigma, labels: model.apply({"params": params}, x, sigma, labels))
    shape = (cfg.batch,) + tuple(sample_shape)

    def iteration(state: DMDState, teacher_params: Any, update_generator: bool):
        k = jax.random.split(jax.random.fold_in(key, state.step), 6)
        z = parallel.shard(jax.random.normal(k[0], shape), mesh)
        labels = (jax.nn.one_hot(jax.random.randint(k[1], (cfg.batch,), 0, label_dim), label_dim)
                  if label_dim else None)
        dm_sigma = table[jax.random.randint(k[2], (cfg.batch,), cfg.dm_min_index, cfg.dm_max_index + 1)]
        dm_eps = jax.random.normal(k[3], shape)
        fake_sigma = table[jax.random.randint(k[4], (cfg.batch,), 0, cfg.num_timesteps)]
        fake_eps = jax.random.normal(k[5], shape)

        def gen_loss(gen_params):
            x = generate(model, gen_params, z, labels, cfg.conditioning_sigma)
            grad = dm_gradient(apply(teacher_params), apply(state.fake.params), x, dm_sigma, dm_eps, labels)
            terms = {"dm": dm_loss(x, grad)}  # + DMD2's GAN / DMD1's regression terms, weighted, when enabled
            return sum(terms.values()), (x, terms)

        gen = state.gen
        if update_generator:
            (_, (x, terms)), grads = jax.value_and_grad(gen_loss, has_aux=True)(gen.params)
            gen = apply_gradients(gen, grads, gen_tx).replace(step=gen.step + 1)
        else:
            _, (x, terms) = gen_loss(gen.params)

        def fake_loss(fake_params):
            return fake_score_loss(apply(fake_params), x, fake_sigma, fake_eps, labels)

        loss_fake, grads = jax.value_and_grad(fake_loss)(state.fake.params)
        fake = apply_gradients(state.fake, grads, fake_tx).replace(step=state.fake.step + 1)
        metrics = {"dm_loss": terms["dm"], "fake_loss": loss_fake,
                   "gen_update": jnp.asarray(float(update_generator), jnp.float32)}
        return DMDState(step=state.step + 1, gen=gen, fake=fake), metrics

    return iteration
