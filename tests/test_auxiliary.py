"""Issue 7: DMD2's GAN term, DMD1's regression term (shapes, where gradients go, off = plain DMD) and the
isometric embedding of the toys in R^D."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from dmdjax import distill, gan, sampling
from dmdjax.data import toy
from dmdjax.nets import MLP, Denoiser

SHAPE = (4,)


def _sample(key, n, consts):
    return toy.chessboard(key, n), None


@pytest.fixture(scope="module")
def tiny():
    model = Denoiser(MLP(features=(16, 16)))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((2, 4)), jnp.ones(2))["params"]
    return model, params


def _cfg(**kw):
    kw = {"regression_pairs": 16, "regression_k": 1, **kw}
    return distill.DistillConfig(batch=8, lr_gen=1e-3, lr_fake=1e-3, warmup=0, **kw)


def _setup(model, params, cfg):
    """(guidance params, consts, draws at step 0) for cfg."""
    key = jax.random.PRNGKey(1)
    active = distill.terms(cfg, model, SHAPE, sample=_sample)
    state = distill.init_state(params, cfg, distill.term_params(active, key))
    consts = distill.step_consts(active, params, key)
    draws = jax.jit(distill.make_draws(cfg, key, active, 0, SHAPE))(jnp.int32(0), consts)
    return state, consts, draws


def _norms(tree):
    return jax.tree.map(lambda g: float(jnp.sum(jnp.abs(g))), tree)


def _all_zero(tree):
    return all(v == 0.0 for v in jax.tree.leaves(_norms(tree)))


def _all_nonzero(tree):
    return all(v > 0.0 for v in jax.tree.leaves(_norms(tree)))


# ----------------------------------------------------------------------------------------------------------
# Losses and heads.

def test_gan_losses_values_and_shapes():
    zero = jnp.zeros(5)
    assert gan.classifier_loss(zero, zero).shape == ()
    np.testing.assert_allclose(gan.classifier_loss(zero, zero), 2 * np.log(2), rtol=1e-6)
    np.testing.assert_allclose(gan.generator_loss(zero), np.log(2), rtol=1e-6)
    # a confident, correct discriminator has a small loss; the generator's loss is then large
    assert float(gan.classifier_loss(10 * jnp.ones(5), -10 * jnp.ones(5))) < 1e-3
    assert float(gan.generator_loss(-10 * jnp.ones(5))) > 9.9


@pytest.mark.parametrize("res, kernel1", [(8, 4), (4, 2)])
def test_conv_head_is_dmd2s_branch(res, kernel1):
    """8x8 bottleneck: Conv 4x4/2 -> GN -> SiLU -> Conv 4x4/4 -> GN -> SiLU -> Conv 1x1 (REFERENCE 1.7)."""
    c = 8
    head = gan.make_head((2, res, res, c))
    assert isinstance(head, gan.ConvHead)
    out, variables = jax.eval_shape(head.init_with_output, jax.random.PRNGKey(0), jnp.zeros((3, res, res, c)))
    p = variables["params"]
    assert p["conv0"]["kernel"].shape == (4, 4, c, c) and p["conv1"]["kernel"].shape == (kernel1, kernel1, c, c)
    assert p["conv2"]["kernel"].shape == (1, 1, c, 1) and p["norm0"]["scale"].shape == (c,)
    assert out.shape == (3,)


def test_conv_head_runs():
    head = gan.ConvHead()
    h = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 8, 8))
    out, _ = jax.jit(head.init_with_output)(jax.random.PRNGKey(0), h)
    assert out.shape == (1,) and np.all(np.isfinite(out))


def test_bottlenecks_and_head_logits(tiny):
    model, params = tiny
    assert gan.bottleneck_shape(model, SHAPE) == (2, 16)          # the MLP's last hidden layer
    cfg = _cfg(gan=True)
    (term,) = distill.terms(cfg, model, SHAPE)
    head = term.head
    assert isinstance(head, gan.MLPHead)
    cls = term.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 4))
    out = gan.logits(model, head, params, cls, x, jnp.ones(8), jnp.zeros((8, 4)))
    assert out.shape == (8,)
    # the bottleneck does not change the denoiser's output or params tree
    assert jax.tree.structure(params) == jax.tree.structure(
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((2, 4)), jnp.ones(2))["params"])


def test_adm_bottleneck_is_encoder_output():
    from dmdjax.configs import MNIST_CPU_NET
    from dmdjax.nets.adm import adm_denoiser
    assert gan.bottleneck_shape(adm_denoiser(MNIST_CPU_NET), (16, 16, 1)) == (2, 8, 8, 64)


def test_regression_pairs_are_teacher_samples(tiny):
    model, params = tiny
    cfg = _cfg(regression_weight=0.25, regression_k=2)
    z, y, labels = distill.teacher_pairs(model, params, cfg, jax.random.PRNGKey(1), SHAPE, batch=5)
    assert z.shape == y.shape == (16, 4) and labels is None
    phi = sampling.phi_k(lambda x, s, l: model.apply({"params": params}, x, s, l), jnp.asarray(z), 2)
    np.testing.assert_allclose(y, phi, rtol=1e-4, atol=1e-3)   # untrained teacher: |y| up to ~80
    assert distill.regression_loss(jnp.ones((3, 2)), jnp.zeros((3, 2))).shape == ()
    np.testing.assert_allclose(distill.regression_loss(jnp.ones((3, 2)), jnp.zeros((3, 2))), 1.0)
    consts = distill.step_consts(distill.terms(cfg, model, SHAPE), params, jax.random.PRNGKey(1))
    for a, b in zip(consts.terms["regression"], (z, y)):      # the step's pairs are these (any batching)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------
# Where gradients go.

@pytest.fixture(scope="module")
def grads(tiny):
    """Gradients of both losses (GAN and regression on) w.r.t. every params tree, in one jitted program."""
    model, params = tiny
    cfg = _cfg(gan=True, regression_weight=0.25)
    state, consts, d = _setup(model, params, cfg)
    gen_loss, guidance_loss = distill.make_losses(model, cfg, distill.terms(cfg, model, SHAPE, sample=_sample))

    def both(gen_params, guidance_params, teacher_params):
        total, (x, terms) = gen_loss(gen_params, guidance_params, teacher_params, d)
        g_total, g_terms = guidance_loss(guidance_params, x, d)
        return total, terms, g_total, g_terms

    def all_grads(gen_params, guidance_params, teacher_params):
        args = (gen_params, guidance_params, teacher_params)
        pick = lambda f: jax.grad(lambda *a: f(both(*a)), argnums=(0, 1, 2))(*args)
        return {"generator": pick(lambda o: o[0]), "gan_gen": pick(lambda o: o[1]["gan_gen"]),
                "regression": pick(lambda o: o[1]["regression"]), "guidance": pick(lambda o: o[2]),
                "gan_cls": pick(lambda o: o[3]["gan_cls"]), "terms": both(*args)[1]}

    return jax.jit(all_grads)(state.gen.params, state.fake.params, params)


def test_generator_loss_reaches_only_the_generator(grads):
    g_gen, g_guid, g_teacher = grads["generator"]
    assert _all_nonzero(g_gen)
    assert _all_zero(g_guid) and _all_zero(g_teacher)
    assert set(grads["terms"]) == {"dm", "gan_gen", "regression"}
    for name in ("gan_gen", "regression"):   # each auxiliary term on its own moves the generator, only it
        assert _all_nonzero(grads[name][0]) and _all_zero(grads[name][1:])


def test_classifier_loss_reaches_only_fake_encoder_and_head(grads):
    g_gen, g_guid, g_teacher = grads["guidance"]
    assert _all_zero(g_gen) and _all_zero(g_teacher)      # generator samples are detached
    assert _all_nonzero(g_guid)                           # fake score (denoising + GAN) and head
    g_gen, g_guid, g_teacher = grads["gan_cls"]
    net = g_guid["fake"]["net"]
    assert _all_zero(g_gen) and _all_zero(g_teacher)
    assert _all_nonzero(g_guid["cls"]) and _all_nonzero(net["Dense_0"]) and _all_nonzero(net["Dense_1"])
    assert _all_zero(net["Dense_2"])                      # the read-out after the bottleneck gets nothing


# ----------------------------------------------------------------------------------------------------------
# Off means plain DMD.

def _one_iteration(model, params, cfg):
    """Two generator-update iterations (jitted once) from the initial state: (state, metrics of the second)."""
    key = jax.random.PRNGKey(1)
    active = distill.terms(cfg, model, SHAPE, sample=_sample)
    iteration = jax.jit(lambda s, c: distill.make_iteration(model, cfg, key, sample_shape=SHAPE, sample=_sample)(
        s, c, True))
    consts = distill.step_consts(active, params, key)
    state, _ = iteration(distill.init_state(params, cfg, distill.term_params(active, key)), consts)
    return iteration(state, consts)


@pytest.fixture(scope="module")
def plain(tiny):
    return _one_iteration(*tiny, _cfg())


def test_switches_off_reproduce_plain_dmd_exactly(tiny, plain):
    model, params = tiny
    plain, m_plain = plain
    off, m_off = _one_iteration(model, params, _cfg(gan_cls_weight=0.5, gan_gen_weight=0.5, regression_pairs=3))
    for a, b in zip(jax.tree.leaves((plain, m_plain)), jax.tree.leaves((off, m_off))):
        np.testing.assert_array_equal(a, b)
    assert set(m_off) == {"dm_loss", "fake_loss", "gen_update"}
    assert distill.step_consts(distill.terms(_cfg()), params) == distill.StepConsts(params, {})   # no terms


def test_gan_with_zero_weights_leaves_plain_dmd_unchanged(tiny, plain):
    """The GAN's draws use a key of their own: with both weights 0 the generator and fake score follow plain DMD."""
    model, params = tiny
    plain, m_plain = plain
    zero, m_zero = _one_iteration(model, params, _cfg(gan=True, gan_cls_weight=0.0, gan_gen_weight=0.0))
    for a, b in zip(jax.tree.leaves((plain.gen, plain.fake.params)),
                    jax.tree.leaves((zero.gen, zero.fake.params["fake"]))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m_plain["dm_loss"], m_zero["dm_loss"], rtol=1e-6)
    assert float(m_plain["dm_loss"]) > 0


def test_a_new_term_is_one_object(tiny, plain, monkeypatch):
    """A term registered in TERMS joins the losses, draws and metrics without other changes; a stream past the
    split's AUX_STREAMS works; a term with weight 0 leaves plain DMD's generator and fake score as they were."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Probe(distill._Bound):
        name, param_name, streams, uses_data = "probe", None, (distill.AUX_STREAMS,), False
        active = staticmethod(lambda cfg: True)

        def draws(self, keys, consts, table, mesh):
            return {"u": jax.random.uniform(keys[0], self.shape)}

        def generator_term(self, gen_params, fake_params, params, x, d):
            loss = jnp.mean((x - d["probe"]["u"]) ** 2)
            return 0.0 * loss, {"probe_gen": loss}

        def fake_term(self, fake_params, params, x, d):
            return 0.0 * jnp.mean(x), {"probe_fake": jnp.mean(d["probe"]["u"])}

    monkeypatch.setattr(distill, "TERMS", distill.TERMS + (Probe,))
    model, params = tiny
    state, m = _one_iteration(model, params, _cfg())
    assert set(m) == {"dm_loss", "fake_loss", "gen_update", "probe_gen", "probe_fake"}
    assert 0.4 < float(m["probe_fake"]) < 0.6
    for a, b in zip(jax.tree.leaves((plain[0].gen, plain[0].fake)), jax.tree.leaves((state.gen, state.fake))):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_config_checks():
    with pytest.raises(ValueError, match="gan_max_timestep"):
        distill.DistillConfig(gan_max_timestep=0)
    with pytest.raises(ValueError, match="regression"):
        distill.DistillConfig(regression_weight=-1.0)
    with pytest.raises(ValueError, match="'cls'"):
        distill.init_state({"w": jnp.zeros(2)}, distill.DistillConfig(gan=True))
    cfg = distill.DistillConfig(iterations=7, chunk=3, ckpt_every=9)
    assert cfg.step() == distill.DistillConfig().step() == distill.StepConfig()


# ----------------------------------------------------------------------------------------------------------
# The embedding in R^D.

@pytest.mark.parametrize("name", ["chessboard", "gmm"])
@pytest.mark.parametrize("dim", [4, 16, 1024])
def test_embedding_is_isometric(name, dim):
    d0 = toy.NATIVE_DIM[name]
    key = jax.random.PRNGKey(3)
    native = np.asarray(toy.get_sampler(name, dim=d0)(key, 300), np.float64)
    embedded = np.asarray(toy.get_sampler(name, dim=dim, embed_seed=0)(key, 300), np.float64)
    assert embedded.shape == (300, dim)
    np.testing.assert_allclose(pdist(embedded), pdist(native), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embedded, axis=1), np.linalg.norm(native, axis=1), rtol=1e-5, atol=1e-5)


def test_embedding_matrix_is_orthonormal_and_seeded():
    q = toy.embedding_matrix(64, 2, seed=0)
    assert q.shape == (64, 2) and q.dtype == np.float32
    np.testing.assert_allclose(q.T @ q, np.eye(2), atol=1e-6)
    np.testing.assert_array_equal(q, toy.embedding_matrix(64, 2, seed=0))
    assert not np.allclose(q, toy.embedding_matrix(64, 2, seed=1))
    assert toy.get_sampler("chessboard", dim=2, embed_seed=0)(jax.random.PRNGKey(0), 5).shape == (5, 2)
    with pytest.raises(ValueError, match="dim must be >= 4"):
        toy.get_sampler("gmm", dim=2, embed_seed=0)


def test_default_sampler_is_the_papers_toy():
    key = jax.random.PRNGKey(4)
    np.testing.assert_array_equal(toy.get_sampler("chessboard")(key, 100), toy.chessboard(key, 100))
    x = np.asarray(toy.get_sampler("chessboard", dim=6)(key, 10))
    assert x.shape == (10, 6) and np.all(x[:, 2:] == 0)
