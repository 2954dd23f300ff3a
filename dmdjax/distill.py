"""One-step DMD distillation as in DMD2's EDM code (REFERENCE 1; paper Sec. 2.2, Eq. 2-3, App. D).

Generator G(z) = D_theta(80 z; 80) and fake score D_psi both start as copies of the teacher D. Every iteration
the fake score takes a denoising step on detached generator samples; when `step % 5 == 0` the generator first
takes a step on the normalised distribution-matching loss. Both steps use the same, pre-update generator
samples, as DMD2 does. The generator's loss is a dict of weighted terms and so is the fake-score ("guidance")
loss; the auxiliary terms (`LossTerm`, `TERMS`) are off by default, and then every number is what plain DMD gives:

    generator: dm (Eq. 3, REF 1.4) [+ 3e-3 gan_gen (DMD2's GAN, REF 1.7)] [+ lambda_reg regression (DMD1, REF 1.8)]
    guidance:  fake (REF 1.5)      [+ 1e-2 gan_cls]

A term with params of its own (the GAN's classifier head) keeps them in the fake-score TrainState:
{'fake': fake score, 'cls': classifier head}, trained by one optimiser with one clipping norm, as DMD2's guidance
module; without such a term the state's params are the fake score's. The teacher's and generator's params trees
never change. The step's constants are one `StepConsts` for every configuration.

Adding a term: a `LossTerm` class below, its entry in `TERMS`, and its fields in `StepConfig`.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from dmdjax import diffusion, files, gan, parallel, sampling
from dmdjax.nets import denoise_fn
from dmdjax.train_state import TrainState, apply_gradients, make_optimizer

__all__ = ["StepConfig", "DistillConfig", "DMDState", "StepConsts", "LossTerm", "GANTerm", "RegressionTerm",
           "TERMS", "terms", "term_params", "init_state", "step_consts", "teacher_pairs", "generate", "dm_gradient",
           "dm_loss", "fake_score_loss", "regression_loss", "make_losses", "make_draws", "make_step",
           "make_iteration"]


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the compiled DMD step depends on: batch, optimisers, schedule, noise levels, auxiliary terms."""
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
    # The DM loss (Fig. 4) and the generator's other terms are computed where the generator updates, as DMD2 does.
    # True also computes them on the other gen_every - 1 iterations, for a 5x denser curve: two more network
    # forwards (teacher, fake score) on each (their cost: docs/performance.md).
    dm_loss_every_iteration: bool = False
    # Auxiliary terms (`TERMS`; the paper uses neither, Sec. 4.1.1). Off by default.
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

    def optimizers(self):
        """(generator, fake-score) optimisers. The generator updates once per `gen_every` iterations, so its
        warm-up, counted in its own updates, is warmup / gen_every: the lr at iteration i is min(1, i/warmup) lr
        for both, as DMD2's per-iteration schedulers give."""
        common = dict(weight_decay=self.weight_decay, clip_norm=self.clip_norm)
        gen = make_optimizer(self.lr_gen, warmup_steps=self.warmup // self.gen_every, **common)
        fake = make_optimizer(self.lr_fake, warmup_steps=self.warmup, **common)
        return gen, fake


@dataclasses.dataclass(frozen=True)
class DistillConfig(StepConfig):
    """The step's `StepConfig` and the loop's cadence: length, checkpoint interval, iterations per jitted chunk."""
    iterations: int = 50_000
    ckpt_every: int = 1000
    chunk: int = 100

    def step(self) -> StepConfig:
        """The fields the compiled step reads: runs that differ only in length or cadence share one step."""
        return StepConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(StepConfig)})


@flax.struct.dataclass
class DMDState:
    step: jnp.ndarray      # distillation iterations done
    gen: TrainState        # generator G_theta
    fake: TrainState       # fake score s_psi (with a term's params: {'fake': s_psi, 'cls': classifier head})


class StepConsts(NamedTuple):
    """What the step reads besides its state: the teacher's params and each active term's constants by name."""
    teacher: Any
    terms: dict      # {term name: its consts}; {} for plain DMD


# ----------------------------------------------------------------------------------------------------------
# Auxiliary loss terms.

class LossTerm(Protocol):
    """An auxiliary loss term of the DMD step, bound to the network and data it serves (`terms`).

    name          its key in the draws and in `StepConsts.terms`
    param_name    its params' key in the fake-score state (beside 'fake'), or None when it has none
    streams       indices of the auxiliary key streams its draws use (`make_draws`); disjoint between terms
    uses_data     whether it reads the Dataset (`sample`, and its consts through `consts`)
    active(cfg) -> bool                                  whether `cfg` turns it on (a staticmethod)
    init(key) -> params or None                          its params, from the distillation key
    consts(teacher_params, key, data_consts, cache_dir) -> pytree, built once outside the jitted step
    draws(keys, consts, table, mesh) -> dict             its random inputs; keys: one per stream
    generator_term(gen_params, fake_params, params, x, d) -> (weighted loss, {metric: unweighted}) or None
    fake_term(fake_params, params, x, d) -> (weighted loss, {metric: unweighted}) or None
    In the last two, d is the iteration's draws with the term's own under d[name], x = G(z) (B, ...), and
    params are stop-gradient'ed in generator_term (only the generator learns there).
    """
    name: ClassVar[str]
    param_name: ClassVar[str | None]
    streams: ClassVar[tuple[int, ...]]
    uses_data: ClassVar[bool]

    @staticmethod
    def active(cfg: StepConfig) -> bool: ...
    def init(self, key) -> Any: ...
    def consts(self, teacher_params, key, data_consts=None, cache_dir: Path | None = None) -> Any: ...
    def draws(self, keys, consts, table, mesh) -> dict: ...
    def generator_term(self, gen_params, fake_params, params, x, d) -> tuple[Any, dict] | None: ...
    def fake_term(self, fake_params, params, x, d) -> tuple[Any, dict] | None: ...


@dataclasses.dataclass(frozen=True)
class _Bound:
    """What a term is built for: the step's config, the network, one sample's shape, labels, the data sampler
    `sample(key, n, data_consts) -> (x, labels)` (the Dataset's)."""
    cfg: StepConfig
    model: Any = None
    sample_shape: tuple[int, ...] = ()
    label_dim: int = 0
    sample: Callable | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.cfg.batch,) + tuple(self.sample_shape)

    def init(self, key):
        return None

    def consts(self, teacher_params, key, data_consts=None, cache_dir=None):
        return None

    def generator_term(self, gen_params, fake_params, params, x, d):
        return None

    def fake_term(self, fake_params, params, x, d):
        return None


# Streams derived from the distillation key for one-off draws, by fold_in with data no iteration index reaches.
_CLS_INIT_STREAM, _PAIRS_STREAM = 2**31 - 1, 2**31 - 2


@dataclasses.dataclass(frozen=True)
class GANTerm(_Bound):
    """DMD2's GAN term (REFERENCE 1.7; `dmdjax.gan`): a classifier head on the fake score's bottleneck.

    Draws: a fresh real batch x_real, labels_real (`sample` on the Dataset's consts) and independent GAN noise,
    sigma index uniform in [0, gan_max_timestep), for the generator's, the fake and the real logits.
    generator: gan_gen_weight softplus(-D(G(z))); guidance: gan_cls_weight (softplus(D(x)) + softplus(-D(x_real))).
    """
    name: ClassVar[str] = "gan"
    param_name: ClassVar[str | None] = "cls"
    streams: ClassVar[tuple[int, ...]] = tuple(range(7))
    uses_data: ClassVar[bool] = True

    @staticmethod
    def active(cfg: StepConfig) -> bool:
        return cfg.gan

    @functools.cached_property
    def bottleneck(self) -> tuple[int, ...]:
        return gan.bottleneck_shape(self.model, self.sample_shape, self.label_dim)

    @functools.cached_property
    def head(self):
        """The head module for the model's bottleneck (ADM: DMD2's ConvHead, MLP: MLPHead)."""
        return gan.make_head(self.bottleneck, self.cfg.gan_head_width)

    def init(self, key):
        """Classifier head params, from `key` (the distillation key) on a stream of its own."""
        return gan.init_head(self.head, jax.random.fold_in(key, _CLS_INIT_STREAM), self.bottleneck)

    def consts(self, teacher_params, key, data_consts=None, cache_dir=None):
        """The Dataset's consts, for `sample`."""
        return data_consts

    def draws(self, keys, consts, table, mesh):
        if self.sample is None:
            raise ValueError("the GAN term needs real data: pass the Dataset's `sample` to make_step")
        b, shape = self.cfg.batch, self.shape
        sigma = lambda k: table[jax.random.randint(k, (b,), 0, self.cfg.gan_max_timestep)]
        x_real, labels_real = self.sample(keys[0], b, consts)
        return dict(x_real=parallel.shard(x_real, mesh), labels_real=labels_real,
                    gen_sigma=sigma(keys[1]), gen_eps=jax.random.normal(keys[2], shape),
                    fake_sigma=sigma(keys[3]), fake_eps=jax.random.normal(keys[4], shape),
                    real_sigma=sigma(keys[5]), real_eps=jax.random.normal(keys[6], shape))

    def _logits(self, fake_params, cls_params, x, sigma, eps, labels):
        return gan.logits(self.model, self.head, fake_params, cls_params, x, sigma, eps, labels)

    def generator_term(self, gen_params, fake_params, params, x, d):
        g = d[self.name]
        loss = gan.generator_loss(self._logits(fake_params, params, x, g["gen_sigma"], g["gen_eps"], d["labels"]))
        return self.cfg.gan_gen_weight * loss, {"gan_gen": loss}

    def fake_term(self, fake_params, params, x, d):
        g = d[self.name]
        logits_fake = self._logits(fake_params, params, x, g["fake_sigma"], g["fake_eps"], d["labels"])
        logits_real = self._logits(fake_params, params, g["x_real"], g["real_sigma"], g["real_eps"],
                                   g["labels_real"])
        loss = gan.classifier_loss(logits_real, logits_fake)
        return self.cfg.gan_cls_weight * loss, {"gan_cls": loss}


@dataclasses.dataclass(frozen=True)
class RegressionTerm(_Bound):
    """DMD1's regression term with L2 (REFERENCE 1.8): regression_weight mean (G(z_ref) - y_ref)^2 on a batch of
    B of the N_ref teacher pairs (`teacher_pairs`), drawn with replacement; generator only."""
    name: ClassVar[str] = "regression"
    param_name: ClassVar[str | None] = None
    streams: ClassVar[tuple[int, ...]] = (7,)
    uses_data: ClassVar[bool] = False
    CACHE: ClassVar[str] = "regression_pairs.npz"

    @staticmethod
    def active(cfg: StepConfig) -> bool:
        return cfg.regression_weight > 0

    def consts(self, teacher_params, key, data_consts=None, cache_dir=None):
        """(z_ref, y_ref, labels or None) as arrays; with `cache_dir`, kept in cache_dir/regression_pairs.npz
        (deterministic in (key, teacher): every host computes them, the first one writes them)."""
        path = None if cache_dir is None else Path(cache_dir) / self.CACHE
        if path is not None and parallel.agree(path.exists()):   # multi-host: process 0's file decides
            with np.load(path) as f:
                pairs = (f["z"], f["y"], f["labels"] if "labels" in f else None)
        else:
            pairs = teacher_pairs(self.model, teacher_params, self.cfg, key, self.sample_shape, self.label_dim)
            if path is not None and parallel.is_main():
                files.save_npz(path, z=pairs[0], y=pairs[1], **({} if pairs[2] is None else {"labels": pairs[2]}))
        return jax.tree.map(jnp.asarray, tuple(pairs))

    def draws(self, keys, consts, table, mesh):
        z_ref, y_ref, labels_ref = consts
        idx = jax.random.randint(keys[0], (self.cfg.batch,), 0, z_ref.shape[0])
        return dict(z=parallel.shard(z_ref[idx], mesh), y=parallel.shard(y_ref[idx], mesh),
                    labels=None if labels_ref is None else labels_ref[idx])

    def generator_term(self, gen_params, fake_params, params, x, d):
        r = d[self.name]
        loss = regression_loss(generate(self.model, gen_params, r["z"], r["labels"], self.cfg.conditioning_sigma),
                               r["y"])
        return self.cfg.regression_weight * loss, {"regression": loss}


TERMS: tuple[type, ...] = (GANTerm, RegressionTerm)   # in the order their losses are summed


def terms(cfg: StepConfig, model=None, sample_shape: tuple[int, ...] = (), label_dim: int = 0,
          sample: Callable | None = None) -> tuple[LossTerm, ...]:
    """The auxiliary terms `cfg` turns on, bound to `model`, samples of `sample_shape` and the data's `sample`."""
    return tuple(t(cfg, model, tuple(sample_shape), label_dim, sample) for t in TERMS if t.active(cfg))


def term_params(active: tuple[LossTerm, ...], key) -> dict:
    """{param_name: params} of the terms with params of their own, from the distillation key."""
    return {t.param_name: t.init(key) for t in active if t.param_name is not None}


def init_state(teacher_params, cfg: StepConfig, params: dict | None = None) -> DMDState:
    """Generator and fake score both start from the teacher's weights (REFERENCE 1.1); the terms' own `params`
    (`term_params`, e.g. the GAN's classifier head under 'cls') join the fake score's."""
    gen_tx, fake_tx = cfg.optimizers()
    copy = lambda p: jax.tree.map(jnp.array, p)
    guidance = copy(teacher_params)
    needed = [t.param_name for t in TERMS if t.active(cfg) and t.param_name is not None]
    missing = [n for n in needed if n not in (params or {})]
    if missing:
        raise ValueError(f"the fake-score state needs the terms' params {missing}: init_state(..., "
                         f"params=term_params(terms(cfg, ...), key))")
    if needed:
        guidance = {"fake": guidance, **{n: params[n] for n in needed}}
    return DMDState(step=jnp.zeros((), jnp.int32), gen=TrainState.create(copy(teacher_params), gen_tx),
                    fake=TrainState.create(guidance, fake_tx))


def _split_guidance(active: tuple[LossTerm, ...], guidance_params):
    """(fake score params, {param_name: params}) of the fake-score TrainState's params."""
    names = [t.param_name for t in active if t.param_name is not None]
    if not names:
        return guidance_params, {}
    return guidance_params["fake"], {n: guidance_params[n] for n in names}


def step_consts(active: tuple[LossTerm, ...], teacher_params, key=None, data_consts=None,
                cache_dir: Path | None = None) -> StepConsts:
    """The step's `StepConsts`: the teacher's params and each term's `consts` (from the distillation `key`, the
    Dataset's `data_consts`; `cache_dir` keeps expensive ones, e.g. the regression pairs)."""
    return StepConsts(teacher_params, {t.name: t.consts(teacher_params, key, data_consts, cache_dir)
                                       for t in active})


def teacher_pairs(model, teacher_params, cfg: StepConfig, key, sample_shape: tuple[int, ...], label_dim: int = 0,
                  batch: int = 500):
    """DMD1's regression data (REFERENCE 1.8): N_ref = cfg.regression_pairs noises z_ref (unit normal, on a
    stream of the distillation key of their own), random labels (or None), and y_ref = Phi_K(z_ref), K =
    cfg.regression_k. Returns (z_ref (N, ...), y_ref (N, ...), labels (N, label_dim) or None) as numpy."""
    kz, ky = jax.random.split(jax.random.fold_in(key, _PAIRS_STREAM))
    n = cfg.regression_pairs
    z = jax.random.normal(kz, (n,) + tuple(sample_shape))
    labels = jax.nn.one_hot(jax.random.randint(ky, (n,), 0, label_dim), label_dim) if label_dim else None
    phi = jax.jit(lambda p, z, y: sampling.phi_k(denoise_fn(model, p), z,
                                                 cfg.regression_k, y))
    y = np.concatenate([parallel.fetch(phi(teacher_params, z[i:i + batch], None if labels is None else labels[i:i + batch]))
                        for i in range(0, n, batch)])
    return np.asarray(z), y, None if labels is None else np.asarray(labels)


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


def make_losses(model, cfg: StepConfig, active: tuple[LossTerm, ...] = ()):
    """The two losses of an iteration as pure functions of their params (the step uses them; tests check them):

    generator_loss(gen_params, guidance_params, teacher_params, draws) -> (total, (x = G(z), terms))
        terms: dm and each active term's generator metrics (gan_gen, regression); total = dm + the weighted
        terms, summed in `TERMS` order. Gradients reach only gen_params: the guidance and teacher params are
        stop-gradient'ed (DMD2 sets requires_grad_(False) on the guidance module in the generator turn); the GAN
        term's gradient flows through the frozen fake encoder and head into x.
    guidance_loss(guidance_params, x, draws) -> (total, terms)
        terms: fake and each active term's fake-score metrics (gan_cls); total = fake + the weighted terms. x
        is detached: gradients reach only the fake score (its encoder also through gan_cls) and the terms' params.
    `draws` is the dict of an iteration's random inputs (`make_draws`); `active` the terms (`terms`).
    """
    apply = lambda params: denoise_fn(model, params)

    def generator_loss(gen_params, guidance_params, teacher_params, d):
        fake_params, own = jax.lax.stop_gradient(_split_guidance(active, guidance_params))
        teacher_params = jax.lax.stop_gradient(teacher_params)
        x = generate(model, gen_params, d["z"], d["labels"], cfg.conditioning_sigma)
        grad = dm_gradient(apply(teacher_params), apply(fake_params), x, d["dm_sigma"], d["dm_eps"], d["labels"])
        terms = {"dm": dm_loss(x, grad)}
        total = terms["dm"]
        for t in active:
            out = t.generator_term(gen_params, fake_params, own.get(t.param_name), x, d)
            if out is not None:
                total = total + out[0]
                terms.update(out[1])
        return total, (x, terms)

    def guidance_loss(guidance_params, x, d):
        fake_params, own = _split_guidance(active, guidance_params)
        x = jax.lax.stop_gradient(x)
        terms = {"fake": fake_score_loss(apply(fake_params), x, d["fake_sigma"], d["fake_eps"], d["labels"])}
        total = terms["fake"]
        for t in active:
            out = t.fake_term(fake_params, own.get(t.param_name), x, d)
            if out is not None:
                total = total + out[0]
                terms.update(out[1])
        return total, terms

    return generator_loss, guidance_loss


AUX_STREAMS = 8   # auxiliary key streams from one split; a stream index >= this is a fold_in of the auxiliary key


def make_draws(cfg: StepConfig, key, active: tuple[LossTerm, ...] = (), label_dim: int = 0,
               sample_shape: tuple[int, ...] = (), mesh=None):
    """`draws(step, consts: StepConsts) -> dict`: an iteration's random inputs, a function of (key, step) only
    (resumable).

    Plain DMD: z (B, ...), labels (uniform one-hot or None), dm_sigma/dm_eps (DM loss, index in [20, 980]),
    fake_sigma/fake_eps (fake-score loss, index in [0, 999]). Each active term's draws under its name, from the
    auxiliary key fold_in(key_step, 1): stream i < AUX_STREAMS is split(aux, AUX_STREAMS)[i], a larger one
    fold_in(aux, i). The auxiliary draws use a key of their own, so plain DMD's draws do not change.
    """
    used = [i for t in active for i in t.streams]
    if len(used) != len(set(used)):
        raise ValueError(f"the terms' key streams overlap: {[(t.name, t.streams) for t in active]}")
    table = jnp.asarray(diffusion.sigma_table(cfg.num_timesteps))
    shape = (cfg.batch,) + tuple(sample_shape)
    b = cfg.batch

    def draws(step, consts: StepConsts):
        base = jax.random.fold_in(key, step)
        k = jax.random.split(base, 6)
        d = {"z": parallel.shard(jax.random.normal(k[0], shape), mesh),
             "labels": (jax.nn.one_hot(jax.random.randint(k[1], (b,), 0, label_dim), label_dim)
                        if label_dim else None),
             "dm_sigma": table[jax.random.randint(k[2], (b,), cfg.dm_min_index, cfg.dm_max_index + 1)],
             "dm_eps": jax.random.normal(k[3], shape),
             "fake_sigma": table[jax.random.randint(k[4], (b,), 0, cfg.num_timesteps)],
             "fake_eps": jax.random.normal(k[5], shape)}
        if not active:
            return d
        aux = jax.random.fold_in(base, 1)
        ka = jax.random.split(aux, AUX_STREAMS)
        stream = lambda i: ka[i] if i < AUX_STREAMS else jax.random.fold_in(aux, i)
        for t in active:
            d[t.name] = t.draws(tuple(stream(i) for i in t.streams), consts.terms[t.name], table, mesh)
        return d

    return draws


def make_step(model, cfg: StepConfig, key, label_dim: int = 0, sample_shape: tuple[int, ...] = (), mesh=None,
              sample=None):
    """One DMD round `(state, consts: StepConsts) -> (state, metrics)`: `gen_every` iterations starting at a
    multiple of `gen_every`, i.e. one iteration with a generator update followed by gen_every - 1 without.
    Metrics have a leading axis of length gen_every: `dm_loss` every iteration (Fig. 4), `fake_loss`,
    `gen_update` (1.0 on generator steps), and the unweighted metrics of the active terms (`gan_gen`, `gan_cls`,
    `regression`). `sample` (the Dataset's) is needed only by the GAN term.

    The generator's loss terms (`dm_loss`, `gan_gen`, `regression`) have one entry per round, from its first
    iteration, unless `cfg.dm_loss_every_iteration` (then gen_every); `run_loop` logs such a metric at the
    iterations it belongs to.

    The schedule is unrolled in Python rather than branched with `lax.cond` or scanned: XLA:CPU runs a
    convolution's backward pass inside a conditional ~15x and inside a loop ~7x slower than at the top level
    (docs/design.md). The arithmetic is identical to DMD2's `step % gen_every == 0` branching.
    """
    iteration = make_iteration(model, cfg, key, label_dim, sample_shape, mesh, sample)

    def round_fn(state: DMDState, consts: StepConsts):
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


def make_iteration(model, cfg: StepConfig, key, label_dim: int = 0, sample_shape: tuple[int, ...] = (), mesh=None,
                   sample=None):
    """A single DMD iteration `(state, consts: StepConsts, update_generator: bool) -> (state, metrics)`.

    One generator forward serves both updates; the fake score then steps on the same, pre-update samples.
    `update_generator` is a Python bool (DMD2 updates the generator when step % gen_every == 0). Without a
    generator update the iteration runs G's forward and the fake-score step only, and its metrics lack the
    generator's terms, unless `cfg.dm_loss_every_iteration` (the state is the same either way).
    """
    parallel.check_batch(cfg.batch, mesh)
    gen_tx, fake_tx = cfg.optimizers()
    active = terms(cfg, model, sample_shape, label_dim, sample)
    generator_loss, guidance_loss = make_losses(model, cfg, active)
    draws = make_draws(cfg, key, active, label_dim, sample_shape, mesh)

    def iteration(state: DMDState, consts: StepConsts, update_generator: bool):
        d = draws(state.step, consts)
        gen = state.gen
        if update_generator:
            (_, (x, terms_)), grads = jax.value_and_grad(generator_loss, has_aux=True)(
                gen.params, state.fake.params, consts.teacher, d)
            gen = apply_gradients(gen, grads, gen_tx).replace(step=gen.step + 1)
        elif cfg.dm_loss_every_iteration:   # the loss for the curve only: two more forwards (teacher, fake)
            _, (x, terms_) = generator_loss(gen.params, state.fake.params, consts.teacher, d)
        else:
            x, terms_ = generate(model, gen.params, d["z"], d["labels"], cfg.conditioning_sigma), {}

        (_, fake_terms), grads = jax.value_and_grad(guidance_loss, has_aux=True)(state.fake.params, x, d)
        fake = apply_gradients(state.fake, grads, fake_tx).replace(step=state.fake.step + 1)
        metrics = {"dm_loss": terms_["dm"]} if "dm" in terms_ else {}
        metrics.update(fake_loss=fake_terms["fake"], gen_update=jnp.asarray(float(update_generator), jnp.float32))
        metrics.update({name: v for name, v in terms_.items() if name != "dm"})
        metrics.update({name: v for name, v in fake_terms.items() if name != "fake"})
        return DMDState(step=state.step + 1, gen=gen, fake=fake), metrics

    return iteration
