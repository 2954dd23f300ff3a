"""One-step DMD distillation as in DMD2's EDM code (REFERENCE 1; paper Sec. 2.2, Eq. 2-3, App. D).

Generator G(z) = D_theta(80 z; 80) and fake score D_psi both start as copies of the teacher D. Every iteration
the fake score takes a denoising step on detached generator samples; when `step % 5 == 0` the generator first
takes a step on the normalised distribution-matching loss. Both steps use the same, pre-update generator
samples, as DMD2 does. The generator's loss is a dict of weighted terms and so is the fake-score ("guidance")
loss; both auxiliary terms are off by default, and then every number is what plain DMD gives:

    generator: dm (Eq. 3, REF 1.4) [+ 3e-3 gan_gen (DMD2's GAN, REF 1.7)] [+ lambda_reg regression (DMD1, REF 1.8)]
    guidance:  fake (REF 1.5)      [+ 1e-2 gan_cls]

With the GAN term the fake-score TrainState's params are {'fake': fake score, 'cls': classifier head}
(`dmdjax.gan`), trained by one optimiser with one clipping norm, as DMD2's guidance module; without it they are
the fake score's params, as before. The teacher's and generator's params trees never change.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dmdjax import diffusion, gan, parallel, sampling
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
    # The DM loss (Fig. 4) and the generator's other terms are computed where the generator updates, as DMD2 does.
    # True also computes them on the other gen_every - 1 iterations, for a 5x denser curve: two more network
    # forwards (teacher, fake score) on each, ~1/3 of such an iteration's time (BUILD_NOTES, issue 8).
    dm_loss_every_iteration: bool = False
    # Auxiliary terms (issue 7; the paper uses neither, Sec. 4.1.1). Off by default.
    gan: bool = False                # DMD2's GAN term (REFERENCE 1.7)
    gan_cls_weight: float = 1e-2     # cls_loss_weight (classifier loss, in the guidance loss)
    gan_gen_weight: float = 3e-3     # gen_cls_loss_weight (generator loss)
    gan_max_timestep: int = 1000     # diffusion_gan_max_timestep: GAN noise index uniform in [0, this)
    gan_head_width: int = 256        # hidden width of the MLP head (toys); the ADM head is DMD2's
    regression_weight: float = 0.0   # DMD1's lambda_reg (0.25 there, for LPIPS; here an L2 loss); 0 = off
    regression_pairs: int = 1000     # N_ref precomputed teacher pairs (z_ref, Phi_K(z_ref))
    regression_k: int = 8            # K of the teacher sampler that makes the pairs

    def __post_init__(self):
        if not 1 <= self.gan_max_timestep <= self.num_timesteps:
            raise ValueError(f"gan_max_timestep must lie in 1..{self.num_timesteps}, got {self.gan_max_timestep}")
        if self.regression_weight < 0 or self.regression_pairs < 1 or self.regression_k < 1:
            raise ValueError("regression_weight must be >= 0 and regression_pairs, regression_k >= 1")

    @property
    def regression(self) -> bool:
        return self.regression_weight > 0

    @property
    def auxiliary(self) -> bool:
        """Whether the step needs more than the teacher's params (real data, regression pairs)."""
        return self.gan or self.regression

    def step_fields(self) -> "DistillConfig":
        """This config with the loop-only fields (iterations, ckpt_every, chunk) at their defaults: what
        `make_step` reads, so one compiled step serves runs that differ only in length or cadence."""
        return dataclasses.replace(self, iterations=DistillConfig.iterations, ckpt_every=DistillConfig.ckpt_every,
                                   chunk=DistillConfig.chunk)

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
    fake: TrainState       # fake score s_psi (with the GAN term: {'fake': s_psi, 'cls': classifier head})


def init_state(teacher_params, cfg: DistillConfig, cls_params=None) -> DMDState:
    """Generator and fake score both start from the teacher's weights (REFERENCE 1.1); with the GAN term the
    classifier head's `cls_params` (`init_classifier`) join the fake score's."""
    gen_tx, fake_tx = cfg.optimizers()
    copy = lambda p: jax.tree.map(jnp.array, p)
    guidance = copy(teacher_params)
    if cfg.gan:
        if cls_params is None:
            raise ValueError("the GAN term needs the classifier head's params: init_state(..., cls_params=...)")
        guidance = {"fake": guidance, "cls": cls_params}
    return DMDState(step=jnp.zeros((), jnp.int32), gen=TrainState.create(copy(teacher_params), gen_tx),
                    fake=TrainState.create(guidance, fake_tx))


def split_guidance(cfg: DistillConfig, guidance_params):
    """(fake score params, classifier head params or None) of the fake-score TrainState's params."""
    return (guidance_params["fake"], guidance_params["cls"]) if cfg.gan else (guidance_params, None)


# Streams derived from the distillation key for one-off draws, by fold_in with data no iteration index reaches.
_CLS_INIT_STREAM, _PAIRS_STREAM = 2**31 - 1, 2**31 - 2


def classifier_head(model, cfg: DistillConfig, sample_shape: tuple[int, ...], label_dim: int = 0):
    """The GAN head module for `model`'s bottleneck (ADM: DMD2's ConvHead, MLP: MLPHead)."""
    return gan.make_head(gan.bottleneck_shape(model, sample_shape, label_dim), cfg.gan_head_width)


def init_classifier(model, cfg: DistillConfig, key, sample_shape: tuple[int, ...], label_dim: int = 0):
    """Classifier head params, from `key` (the distillation key) on a stream of its own."""
    shape = gan.bottleneck_shape(model, sample_shape, label_dim)
    head = gan.make_head(shape, cfg.gan_head_width)
    return gan.init_head(head, jax.random.fold_in(key, _CLS_INIT_STREAM), shape)


def teacher_pairs(model, teacher_params, cfg: DistillConfig, key, sample_shape: tuple[int, ...], label_dim: int = 0,
                  batch: int = 500):
    """DMD1's regression data (REFERENCE 1.8): N_ref = cfg.regression_pairs noises z_ref (unit normal, on a
    stream of the distillation key of their own), random labels (or None), and y_ref = Phi_K(z_ref), K =
    cfg.regression_k. Returns (z_ref (N, ...), y_ref (N, ...), labels (N, label_dim) or None) as numpy."""
    kz, ky = jax.random.split(jax.random.fold_in(key, _PAIRS_STREAM))
    n = cfg.regression_pairs
    z = jax.random.normal(kz, (n,) + tuple(sample_shape))
    labels = jax.nn.one_hot(jax.random.randint(ky, (n,), 0, label_dim), label_dim) if label_dim else None
    phi = jax.jit(lambda p, z, y: sampling.phi_k(lambda x, s, l: model.apply({"params": p}, x, s, l), z,
                                                 cfg.regression_k, y))
    y = np.concatenate([np.asarray(phi(teacher_params, z[i:i + batch], None if labels is None else labels[i:i + batch]))
                        for i in range(0, n, batch)])
    return np.asarray(z), y, None if labels is None else np.asarray(labels)


def step_consts(cfg: DistillConfig, teacher_params, data_consts=None, pairs=None):
    """The `consts` the step takes: the teacher's params alone for plain DMD (as before), else
    {'teacher', 'data' (the Dataset's consts, for real samples), 'pairs' ((z_ref, y_ref, labels))}."""
    if not cfg.auxiliary:
        return teacher_params
    if cfg.regression and pairs is None:
        raise ValueError("the regression term needs its teacher pairs: step_consts(..., pairs=teacher_pairs(...))")
    return {"teacher": teacher_params, "data": data_consts if cfg.gan else None,
            "pairs": jax.tree.map(jnp.asarray, tuple(pairs)) if cfg.regression else None}


def generate(model, gen_params, z, labels=None, sigma: float = diffusion.SIGMA_MAX):
    """G(z) = D(sigma z; sigma, y) with sigma = 80; z: (B, ...) unit normal -> (B, ...)."""
    return model.apply({"params": gen_params}, sigma * z, jnp.full((z.shape[0],), sigma), labels)


def dm_gradient(real_fn, fake_fn, x, sigma, eps, labels=None):
    """DMD2's normalised distribution-matching gradient (REFERENCE 1.4), per sample, with no gradient flow.

    grad = (D_fake(x_t) - D_real(x_t)) / mean|x - D_real(x_t)|, x_t = x + sigma eps, NaNs zeroed. This is
    w(t)(s_psi - s) of Eq. 3 with w = sigma^2 / mean|x - D_real|. x: (B, ...), sigma: (B,). real_fn, fake_fn:
    fn(x, sigma) -> D, or fn(x, sigma, labels) when labels are given.
    """
    x = jax.lax.stop_gradient(x)
    x_t = x + diffusion.expand(sigma, x) * eps
    d_real = diffusion.denoise(real_fn, x_t, sigma, labels)
    d_fake = diffusion.denoise(fake_fn, x_t, sigma, labels)
    axes = tuple(range(1, x.ndim))
    norm = jnp.mean(jnp.abs(x - d_real), axis=axes, keepdims=True)
    return jax.lax.stop_gradient(jnp.nan_to_num((d_fake - d_real) / norm))


def dm_loss(x, grad):
    """0.5 * MSE(x, stop_gradient(x - grad)), mean over all B*C*H*W elements: d loss / d x = grad / x.size."""
    return 0.5 * jnp.mean((x - jax.lax.stop_gradient(x - grad)) ** 2)


def fake_score_loss(fake_fn, x, sigma, eps, labels=None):
    """Denoising loss of the fake score on detached samples, EDM weighting 1/sigma^2 + 1/sigma_data^2 (REF 1.5).
    fake_fn(x, sigma) -> D, or fake_fn(x, sigma, labels) when labels are given."""
    x = jax.lax.stop_gradient(x)
    s = diffusion.expand(sigma, x)
    return jnp.mean(diffusion.loss_weight(s) * (diffusion.denoise(fake_fn, x + s * eps, sigma, labels) - x) ** 2)


def regression_loss(g, y):
    """DMD1's regression term with L2 in place of LPIPS (REFERENCE 1.8): mean over the batch and all elements of
    (G(z_ref) - y_ref)^2. LPIPS needs pretrained VGG/AlexNet weights, which cannot be downloaded here; the
    per-element mean is the same reduction as the DM loss's (and LPIPS is itself a spatial average), so a weight
    means the same for every data dimension. g, y: (B, ...) -> scalar."""
    return jnp.mean((g - y) ** 2)


def make_losses(model, cfg: DistillConfig, head=None):
    """The two losses of an iteration as pure functions of their params (the step uses them; tests check them):

    generator_loss(gen_params, guidance_params, teacher_params, draws) -> (total, (x = G(z), terms))
        terms: dm [, gan_gen] [, regression]; total = dm + gan_gen_weight gan_gen + regression_weight regression.
        Gradients reach only gen_params: the guidance and teacher params are stop-gradient'ed (DMD2 sets
        requires_grad_(False) on the guidance module in the generator turn); the GAN term's gradient flows
        through the frozen fake encoder and head into x.
    guidance_loss(guidance_params, x, draws) -> (total, terms)
        terms: fake [, gan_cls]; total = fake + gan_cls_weight gan_cls. x is detached: gradients reach only the
        fake score (its encoder also through gan_cls) and the head.
    `draws` is the dict of an iteration's random inputs (`make_iteration`); `head` the GAN head module.
    """
    if cfg.gan and head is None:
        raise ValueError("the GAN term needs the classifier head module (classifier_head(...))")
    apply = lambda params: (lambda x, sigma, labels: model.apply({"params": params}, x, sigma, labels))

    def generator_loss(gen_params, guidance_params, teacher_params, d):
        fake_params, cls_params = jax.lax.stop_gradient(split_guidance(cfg, guidance_params))
        teacher_params = jax.lax.stop_gradient(teacher_params)
        x = generate(model, gen_params, d["z"], d["labels"], cfg.conditioning_sigma)
        grad = dm_gradient(apply(teacher_params), apply(fake_params), x, d["dm_sigma"], d["dm_eps"], d["labels"])
        terms = {"dm": dm_loss(x, grad)}
        total = terms["dm"]
        if cfg.gan:
            logits = gan.logits(model, head, fake_params, cls_params, x, d["gan_gen_sigma"], d["gan_gen_eps"],
                                d["labels"])
            terms["gan_gen"] = gan.generator_loss(logits)
            total = total + cfg.gan_gen_weight * terms["gan_gen"]
        if cfg.regression:
            g_ref = generate(model, gen_params, d["z_ref"], d["labels_ref"], cfg.conditioning_sigma)
            terms["regression"] = regression_loss(g_ref, d["y_ref"])
            total = total + cfg.regression_weight * terms["regression"]
        return total, (x, terms)

    def guidance_loss(guidance_params, x, d):
        fake_params, cls_params = split_guidance(cfg, guidance_params)
        x = jax.lax.stop_gradient(x)
        terms = {"fake": fake_score_loss(apply(fake_params), x, d["fake_sigma"], d["fake_eps"], d["labels"])}
        total = terms["fake"]
        if cfg.gan:
            logits_fake = gan.logits(model, head, fake_params, cls_params, x, d["cls_fake_sigma"], d["cls_fake_eps"],
                                     d["labels"])
            logits_real = gan.logits(model, head, fake_params, cls_params, d["x_real"], d["cls_real_sigma"],
                                     d["cls_real_eps"], d["labels_real"])
            terms["gan_cls"] = gan.classifier_loss(logits_real, logits_fake)
            total = total + cfg.gan_cls_weight * terms["gan_cls"]
        return total, terms

    return generator_loss, guidance_loss


def make_draws(cfg: DistillConfig, key, label_dim: int = 0, sample_shape: tuple[int, ...] = (), mesh=None,
               sample=None):
    """`draws(step, aux) -> dict`: an iteration's random inputs, a function of (key, step) only (resumable).

    Plain DMD: z (B, ...), labels (uniform one-hot or None), dm_sigma/dm_eps (DM loss, index in [20, 980]),
    fake_sigma/fake_eps (fake-score loss, index in [0, 999]). GAN: a fresh real batch x_real, labels_real from
    `sample(key, B, aux['data'])`, and independent GAN noise (sigma index in [0, gan_max_timestep)) for the
    generator's, the fake and the real logits. Regression: a batch of B pairs drawn with replacement from
    aux['pairs']. The auxiliary draws use a key of their own, so plain DMD's draws do not change.
    """
    if cfg.gan and sample is None:
        raise ValueError("the GAN term needs real data: pass the Dataset's `sample` to make_step")
    table = jnp.asarray(diffusion.sigma_table(cfg.num_timesteps))
    shape = (cfg.batch,) + tuple(sample_shape)
    b = cfg.batch

    def draws(step, aux):
        base = jax.random.fold_in(key, step)
        k = jax.random.split(base, 6)
        d = {"z": parallel.shard(jax.random.normal(k[0], shape), mesh),
             "labels": (jax.nn.one_hot(jax.random.randint(k[1], (b,), 0, label_dim), label_dim)
                        if label_dim else None),
             "dm_sigma": table[jax.random.randint(k[2], (b,), cfg.dm_min_index, cfg.dm_max_index + 1)],
             "dm_eps": jax.random.normal(k[3], shape),
             "fake_sigma": table[jax.random.randint(k[4], (b,), 0, cfg.num_timesteps)],
             "fake_eps": jax.random.normal(k[5], shape)}
        if not cfg.auxiliary:
            return d
        ka = jax.random.split(jax.random.fold_in(base, 1), 8)
        if cfg.gan:
            gan_sigma = lambda kk: table[jax.random.randint(kk, (b,), 0, cfg.gan_max_timestep)]
            x_real, labels_real = sample(ka[0], b, aux["data"])
            d.update(x_real=parallel.shard(x_real, mesh), labels_real=labels_real,
                     gan_gen_sigma=gan_sigma(ka[1]), gan_gen_eps=jax.random.normal(ka[2], shape),
                     cls_fake_sigma=gan_sigma(ka[3]), cls_fake_eps=jax.random.normal(ka[4], shape),
                     cls_real_sigma=gan_sigma(ka[5]), cls_real_eps=jax.random.normal(ka[6], shape))
        if cfg.regression:
            z_ref, y_ref, labels_ref = aux["pairs"]
            idx = jax.random.randint(ka[7], (b,), 0, z_ref.shape[0])
            d.update(z_ref=parallel.shard(z_ref[idx], mesh), y_ref=parallel.shard(y_ref[idx], mesh),
                     labels_ref=None if labels_ref is None else labels_ref[idx])
        return d

    return draws


def make_step(model, cfg: DistillConfig, key, label_dim: int = 0, sample_shape: tuple[int, ...] = (), mesh=None,
              sample=None):
    """One DMD round `(state, consts) -> (state, metrics)`: `gen_every` iterations starting at a
    multiple of `gen_every`, i.e. one iteration with a generator update followed by gen_every - 1 without.
    `consts` is `step_consts(...)`: the teacher's params for plain DMD. Metrics have a leading axis of length
    gen_every: `dm_loss` every iteration (Fig. 4), `fake_loss`, `gen_update` (1.0 on generator steps), and the
    unweighted auxiliary terms `gan_gen`, `gan_cls`, `regression` when on. `sample` (the Dataset's) is needed
    only by the GAN term.

    The generator's loss terms (`dm_loss`, `gan_gen`, `regression`) have one entry per round, from its first
    iteration, unless `cfg.dm_loss_every_iteration` (then gen_every); `run_loop` logs such a metric at the
    iterations it belongs to.

    The schedule is unrolled in Python rather than branched with `lax.cond` or scanned: XLA:CPU runs a
    convolution's backward pass inside a conditional ~15x and inside a loop ~7x slower than at the top level
    (BUILD_NOTES.md). The arithmetic is identical to DMD2's `step % gen_every == 0` branching.
    """
    iteration = make_iteration(model, cfg, key, label_dim, sample_shape, mesh, sample)

    def round_fn(state: DMDState, consts: Any):
        metrics = []
        for i in range(cfg.gen_every):   # unrolled: no control flow around backward passes (see above)
            state, m = iteration(state, consts, update_generator=(i == 0))
            metrics.append(m)
        # the first (generator) iteration has every metric; the others may lack the generator's terms
        return state, {name: jnp.stack([m[name] for m in metrics if name in m]) for name in metrics[0]}

    # The same round as gen_every separately compiled iterations (two programs, the generator iteration and the
    # fake-score iteration): `loop.run_loop` calls these when a chunk is one round, so that no program holds
    # five backward passes (the paper ADM's five-iteration program takes XLA:CPU tens of minutes to compile).
    gen_iteration = functools.partial(iteration, update_generator=True)
    fake_iteration = functools.partial(iteration, update_generator=False)
    round_fn.parts = (gen_iteration,) + (fake_iteration,) * (cfg.gen_every - 1)
    return round_fn


def make_iteration(model, cfg: DistillConfig, key, label_dim: int = 0, sample_shape: tuple[int, ...] = (), mesh=None,
                   sample=None):
    """A single DMD iteration `(state, consts, update_generator: bool) -> (state, metrics)`.

    One generator forward serves both updates; the fake score then steps on the same, pre-update samples.
    `update_generator` is a Python bool (DMD2 updates the generator when step % gen_every == 0). Without a
    generator update the iteration runs G's forward and the fake-score step only, and its metrics lack the
    generator's terms, unless `cfg.dm_loss_every_iteration` (the state is the same either way).
    """
    parallel.check_batch(cfg.batch, mesh)
    gen_tx, fake_tx = cfg.optimizers()
    head = classifier_head(model, cfg, sample_shape, label_dim) if cfg.gan else None
    generator_loss, guidance_loss = make_losses(model, cfg, head)
    draws = make_draws(cfg, key, label_dim, sample_shape, mesh, sample)

    def iteration(state: DMDState, consts: Any, update_generator: bool):
        teacher_params, aux = (consts["teacher"], consts) if cfg.auxiliary else (consts, None)
        d = draws(state.step, aux)
        gen = state.gen
        if update_generator:
            (_, (x, terms)), grads = jax.value_and_grad(generator_loss, has_aux=True)(
                gen.params, state.fake.params, teacher_params, d)
            gen = apply_gradients(gen, grads, gen_tx).replace(step=gen.step + 1)
        elif cfg.dm_loss_every_iteration:   # the loss for the curve only: two more forwards (teacher, fake)
            _, (x, terms) = generator_loss(gen.params, state.fake.params, teacher_params, d)
        else:
            x, terms = generate(model, gen.params, d["z"], d["labels"], cfg.conditioning_sigma), {}

        (_, fake_terms), grads = jax.value_and_grad(guidance_loss, has_aux=True)(state.fake.params, x, d)
        fake = apply_gradients(state.fake, grads, fake_tx).replace(step=state.fake.step + 1)
        metrics = {"dm_loss": terms["dm"]} if "dm" in terms else {}
        metrics.update(fake_loss=fake_terms["fake"], gen_update=jnp.asarray(float(update_generator), jnp.float32))
        metrics.update({name: terms[name] for name in ("gan_gen", "regression") if name in terms})
        metrics.update({name: fake_terms[name] for name in ("gan_cls",) if name in fake_terms})
        return DMDState(step=state.step + 1, gen=gen, fake=fake), metrics

    return iteration
