"""A small train state and the optimiser shared by teacher training and DMD (REFERENCE 1.6)."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """step: int32 scalar (iterations done); params and opt_state: pytrees."""
    step: jnp.ndarray
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation):
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=jax.jit(tx.init)(params))


@flax.struct.dataclass
class EmaTrainState(TrainState):
    """A TrainState that also keeps `ema`, an exponential moving average of `params` (the teacher's, EDM's rule:
    `dmdjax.teacher.ema_beta`). A separate class so that runs without an EMA keep their checkpoint layout."""
    ema: Any

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation):
        state = TrainState.create(params, tx)
        return cls(step=state.step, params=state.params, opt_state=state.opt_state,
                   ema=jax.tree.map(jnp.array, params))


def make_optimizer(lr: float, *, warmup_steps: int = 0, weight_decay: float = 0.0, clip_norm: float | None = None,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW with a linear warm-up from 0 to `lr` over `warmup_steps` optimiser updates,
    constant after (DMD2's `constant_with_warmup`; its first update uses lr 0, as here)."""
    schedule = optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps > 0 else optax.constant_schedule(lr)
    chain = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
    chain.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return optax.chain(*chain)


def apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation) -> TrainState:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state)
