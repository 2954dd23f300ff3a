"""Teacher training: the EDM denoising objective (REFERENCE 2.2) with a jitted, data-parallel step.

A data source is a pure function `sample(key, n) -> (x, labels)` (labels None when unconditional), drawn inside
the step from `fold_in(seed, step)`: the run is a deterministic function of the seed, so resuming is exact.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from dmdjax import diffusion, parallel
from dmdjax.train_state import EmaTrainState, TrainState, apply_gradients, make_optimizer


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    steps: int = 4000            # training iterations
    batch: int = 512
    lr: float = 1e-3
    warmup: int = 0              # linear lr warm-up (optimiser steps)
    weight_decay: float = 0.0
    clip_norm: float | None = None
    ckpt_every: int = 1000
    chunk: int = 100             # steps per jitted scan
    ema_halflife_kimg: float = 0.0      # EMA of the weights, half-life in thousands of images (EDM: 500); 0 = off
    ema_rampup_ratio: float = 0.05      # half-life <= this x images seen (EDM's ramp-up); 0 = no ramp-up
    distill_ema: bool = True            # with the EMA on: snapshots give the EMA to Phi_K and DMD (EDM, DMD2)

    @property
    def ema(self) -> bool:
        return self.ema_halflife_kimg > 0

    def optimizer(self):
        return make_optimizer(self.lr, warmup_steps=self.warmup, weight_decay=self.weight_decay,
                              clip_norm=self.clip_norm)


def init_args(key, example_x, label_dim: int = 0) -> tuple:
    """`model.init`'s arguments for an example batch (B, ...): (key, x, sigma = 1, zero one-hot labels or None)."""
    labels = jnp.zeros((example_x.shape[0], label_dim)) if label_dim else None
    return key, example_x, jnp.ones((example_x.shape[0],)), labels


def init_params(model, key, example_x, label_dim: int = 0):
    """Initialise Denoiser params from an example batch (B, ...) as one jitted program, which the persistent
    compilation cache keeps (eagerly, every initialiser would be a program of its own, compiled on every run).
    The values are the eager init's. On CPU the program is compiled without XLA's backend optimisations: it runs
    once, and its compile time is that of a few hundred random-number kernels."""
    args = init_args(key, example_x, label_dim)
    lowered = jax.jit(lambda k, x, s, y: model.init(k, x, s, y)["params"]).lower(*args)
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    return lowered.compile(options)(*args)


def ema_beta(step, batch: int, halflife_kimg: float, rampup_ratio: float = 0.05):
    """EDM's EMA decay for the update that follows optimiser step `step` (0-based; `step x batch` images seen
    before it): half-life h = min(1000 halflife_kimg, rampup_ratio x step x batch) images (no min when
    rampup_ratio is 0), beta = 0.5 ** (batch / max(h, 1e-8)); then ema <- beta ema + (1 - beta) params."""
    h = jnp.asarray(halflife_kimg * 1000.0, jnp.float32)
    if rampup_ratio:
        h = jnp.minimum(h, rampup_ratio * jnp.asarray(step, jnp.float32) * batch)
    return 0.5 ** (batch / jnp.maximum(h, 1e-8))


def update_ema(ema, params, beta):
    """ema + (1 - beta) (params - ema), leaf by leaf: torch's `params.lerp(ema, beta)` as EDM writes it."""
    return jax.tree.map(lambda e, p: p + beta.astype(p.dtype) * (e - p), ema, params)


def make_step(model, tx, sample: Callable, batch: int, key, mesh=None, ema_halflife_kimg: float = 0.0,
              ema_rampup_ratio: float = 0.05) -> Callable:
    """The teacher step `(state, consts) -> (state, {'loss'})`; consts is passed to `sample` (e.g. a dataset).
    With `ema_halflife_kimg` > 0 the state is an EmaTrainState and its EMA follows EDM's rule (`ema_beta`)."""
    parallel.check_batch(batch, mesh)

    def step(state: TrainState, consts: Any):
        k_data, k_loss, k_drop = jax.random.split(jax.random.fold_in(key, state.step), 3)
        x, labels = sample(k_data, batch, consts)
        x = parallel.shard(x, mesh)

        def loss_fn(params):
            def denoise(x, sigma, labels):
                return model.apply({"params": params}, x, sigma, labels, train=True, rngs={"dropout": k_drop})
            return diffusion.edm_loss(denoise, x, k_loss, labels)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        new = apply_gradients(state, grads, tx).replace(step=state.step + 1)
        if ema_halflife_kimg > 0:
            beta = ema_beta(state.step, batch, ema_halflife_kimg, ema_rampup_ratio)
            new = new.replace(ema=update_ema(state.ema, new.params, beta))
        return new, {"loss": loss}

    return step


def create_state(model, cfg: TeacherConfig, key, example_x, label_dim: int = 0) -> TrainState:
    """The teacher's initial TrainState (an EmaTrainState, EMA = the initial params, when `cfg.ema`)."""
    cls = EmaTrainState if cfg.ema else TrainState
    return cls.create(init_params(model, key, example_x, label_dim), cfg.optimizer())


def step_fn(model, cfg: TeacherConfig, sample: Callable, key, mesh=None) -> Callable:
    """`make_step` with cfg's optimiser, batch and EMA."""
    return make_step(model, cfg.optimizer(), sample, cfg.batch, key, mesh, cfg.ema_halflife_kimg,
                     cfg.ema_rampup_ratio)


def distilled_params(state: TrainState, cfg: TeacherConfig):
    """The weights a snapshot gives to Phi_K and DMD: the EMA when it is kept and `cfg.distill_ema`, else the raw
    params (DMD2 loads EDM's EMA into teacher, fake score and generator)."""
    return state.ema if cfg.ema and cfg.distill_ema else state.params
