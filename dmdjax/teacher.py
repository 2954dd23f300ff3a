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
from dmdjax.train_state import TrainState, apply_gradients, make_optimizer


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

    def optimizer(self):
        return make_optimizer(self.lr, warmup_steps=self.warmup, weight_decay=self.weight_decay,
                              clip_norm=self.clip_norm)


def init_params(model, key, example_x, label_dim: int = 0):
    """Initialise Denoiser params from an example batch (B, ...) as one jitted program, which the persistent
    compilation cache keeps (eagerly, every initialiser would be a program of its own, compiled on every run).
    The values are the eager init's. On CPU the program is compiled without XLA's backend optimisations: it runs
    once, and its compile time is that of a few hundred random-number kernels."""
    labels = jnp.zeros((example_x.shape[0], label_dim)) if label_dim else None
    args = (key, example_x, jnp.ones((example_x.shape[0],)), labels)
    lowered = jax.jit(lambda k, x, s, y: model.init(k, x, s, y)["params"]).lower(*args)
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    return lowered.compile(options)(*args)


def make_step(model, tx, sample: Callable, batch: int, key, mesh=None) -> Callable:
    """The teacher step `(state, consts) -> (state, {'loss'})`; consts is passed to `sample` (e.g. a dataset)."""
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
        state = apply_gradients(state, grads, tx).replace(step=state.step + 1)
        return state, {"loss": loss}

    return step


def create_state(model, cfg: TeacherConfig, key, example_x, label_dim: int = 0) -> TrainState:
    return TrainState.create(init_params(model, key, example_x, label_dim), cfg.optimizer())
