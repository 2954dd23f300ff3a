"""DMD: the distribution-matching gradient, the fake-score loss and the 1:5 update schedule."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dmdjax import diffusion, distill
from dmdjax.nets import MLP, Denoiser


def test_dm_loss_gradient_is_grad_over_numel():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 1))
    grad = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    dx = jax.grad(lambda x: distill.dm_loss(x, grad))(x)
    np.testing.assert_allclose(dx, grad / x.size, rtol=1e-6)
    np.testing.assert_allclose(distill.dm_loss(x, grad), 0.5 * jnp.mean(grad ** 2), rtol=1e-6)


def test_dm_gradient_formula_and_nan_zeroing():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    sigma = jnp.array([0.1, 1.0, 10.0, 50.0])
    eps = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    real = lambda xt, s, y: 0.5 * xt
    fake = lambda xt, s, y: 0.25 * xt + 1.0
    g = distill.dm_gradient(real, fake, x, sigma, eps)
    xt = x + sigma[:, None] * eps
    expected = (fake(xt, 0, 0) - real(xt, 0, 0)) / jnp.mean(jnp.abs(x - real(xt, 0, 0)), axis=1, keepdims=True)
    np.testing.assert_allclose(g, expected, rtol=1e-5)
    # a zero normaliser (x == D_real) gives NaN/inf in DMD2 before nan_to_num: no NaN may survive
    g0 = distill.dm_gradient(lambda xt, s, y: x, lambda xt, s, y: x, x, sigma, 0 * eps)
    assert np.all(np.isfinite(g0)) and np.all(np.asarray(g0) == 0)


def test_dm_gradient_pushes_generator_toward_teacher():
    # teacher denoises to +1, fake to -1: one SGD step on the DM loss must move x toward +1
    x = jnp.zeros((2, 3))
    real = lambda xt, s, y: jnp.ones_like(xt)
    fake = lambda xt, s, y: -jnp.ones_like(xt)
    grad = distill.dm_gradient(real, fake, x, jnp.ones(2), jnp.zeros_like(x))
    x_new = x - 100.0 * jax.grad(lambda x: distill.dm_loss(x, grad))(x)
    assert np.all(np.asarray(x_new) > 0)


def test_fake_score_loss_uses_edm_weight():
    x = jnp.ones((2, 4))
    sigma = jnp.array([0.5, 2.0])
    eps = jnp.zeros_like(x)
    zero = lambda xt, s, y: jnp.zeros_like(xt)
    expected = jnp.mean(diffusion.loss_weight(sigma)[:, None] * jnp.ones((2, 4)))
    np.testing.assert_allclose(distill.fake_score_loss(zero, x, sigma, eps), expected, rtol=1e-6)


@pytest.fixture(scope="module")
def tiny():
    model = Denoiser(MLP(features=(16, 16)))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 4)), jnp.ones(2))["params"]
    cfg = distill.DistillConfig(iterations=12, batch=8, lr_gen=1e-3, lr_fake=1e-3, warmup=0)
    return model, params, cfg


def test_generator_at_init_is_phi_1(tiny):
    model, params, cfg = tiny
    state = distill.init_state(params, cfg)
    z = jax.random.normal(jax.random.PRNGKey(3), (5, 4))
    from dmdjax import sampling
    phi1 = sampling.phi_k(lambda x, s, y=None: model.apply({"params": params}, x, s, y), z, 1)
    np.testing.assert_array_equal(distill.generate(model, state.gen.params, z), phi1)


def _differs(a, b):
    return any(jax.tree.leaves(jax.tree.map(lambda u, v: bool(jnp.any(u != v)), a, b)))


def test_update_schedule_one_generator_step_in_five(tiny):
    model, params, cfg = tiny
    iteration = distill.make_iteration(model, cfg, jax.random.PRNGKey(1), sample_shape=(4,))
    state = distill.init_state(params, cfg)
    changed_gen, changed_fake = [], []
    for i in range(11):
        new, m = jax.jit(iteration, static_argnums=2)(state, distill.StepConsts(params, {}), i % cfg.gen_every == 0)
        changed_gen.append(_differs(new.gen.params, state.gen.params))
        changed_fake.append(_differs(new.fake.params, state.fake.params))
        assert np.isfinite(float(m["fake_loss"]))
        assert ("dm_loss" in m) == (i % 5 == 0)     # the DM loss where the generator updates, as DMD2
        assert "dm_loss" not in m or np.isfinite(float(m["dm_loss"]))
        state = new
    assert changed_gen == [i % 5 == 0 for i in range(11)]
    assert all(changed_fake)
    assert int(state.step) == 11 and int(state.gen.step) == 3 and int(state.fake.step) == 11


def test_round_equals_five_iterations(tiny):
    model, params, cfg = tiny
    key = jax.random.PRNGKey(1)
    round_fn = jax.jit(distill.make_step(model, cfg, key, sample_shape=(4,)))
    iteration = jax.jit(distill.make_iteration(model, cfg, key, sample_shape=(4,)), static_argnums=2)
    consts = distill.StepConsts(params, {})
    by_round, m = round_fn(round_fn(distill.init_state(params, cfg), consts)[0], consts)
    assert m["gen_update"].tolist() == [1, 0, 0, 0, 0] and m["dm_loss"].shape == (1,)
    state = distill.init_state(params, cfg)
    for i in range(10):
        state, _ = iteration(state, consts, i % 5 == 0)
    assert int(by_round.step) == 10 and int(by_round.gen.step) == 2 and int(by_round.fake.step) == 10
    for a, b in zip(jax.tree.leaves(by_round), jax.tree.leaves(state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dm_loss_every_iteration_changes_only_the_metrics(tiny):
    """The denser DM-loss curve costs forwards, not a different run: same state, bitwise; its entry at the
    generator iteration is the default's; the others are the DM loss of the then-current generator."""
    model, params, cfg = tiny
    dense_cfg = dataclasses.replace(cfg, dm_loss_every_iteration=True)
    key = jax.random.PRNGKey(1)
    runs = {}
    for name, c in (("sparse", cfg), ("dense", dense_cfg)):
        round_fn = jax.jit(distill.make_step(model, c, key, sample_shape=(4,)))
        consts = distill.StepConsts(params, {})
        state, _ = round_fn(distill.init_state(params, c), consts)
        runs[name] = (state, *round_fn(state, consts))
    (_, sparse, m_sparse), (_, dense, m_dense) = runs["sparse"], runs["dense"]
    for a, b in zip(jax.tree.leaves(sparse), jax.tree.leaves(dense)):
        np.testing.assert_array_equal(a, b)
    assert m_dense["dm_loss"].shape == (5,) and float(m_dense["dm_loss"][0]) == float(m_sparse["dm_loss"][0])
    assert len(set(np.asarray(m_dense["dm_loss"]).tolist())) == 5 and np.all(np.asarray(m_dense["dm_loss"]) > 0)


def test_dm_loss_zero_when_fake_equals_teacher(tiny):
    model, params, cfg = tiny
    iteration = distill.make_iteration(model, cfg, jax.random.PRNGKey(1), sample_shape=(4,))
    _, m = iteration(distill.init_state(params, cfg), distill.StepConsts(params, {}), True)
    assert float(m["dm_loss"]) == 0.0     # D_fake == D_real at initialisation


def test_warmup_schedules_follow_iterations():
    cfg = distill.DistillConfig(lr_gen=1.0, lr_fake=1.0, warmup=500, gen_every=5, weight_decay=0.0, clip_norm=1e9)
    gen_tx, fake_tx = cfg.optimizers()
    p = {"w": jnp.zeros(())}

    def lr_at(tx, n_updates):   # SGD-like probe: Adam's first step has |update| = lr for any nonzero grad
        state = tx.init(p)
        for _ in range(n_updates):
            _, state = tx.update({"w": jnp.ones(())}, state, p)
        upd, _ = tx.update({"w": jnp.ones(())}, state, p)
        return -float(upd["w"])

    # generator update u happens at iteration 5u, where DMD2's per-iteration scheduler gives lr * 5u / 500
    assert lr_at(gen_tx, 0) == 0.0
    assert lr_at(gen_tx, 10) == pytest.approx(50 / 500, rel=1e-4)     # iteration 50
    assert lr_at(gen_tx, 100) == pytest.approx(1.0, rel=1e-4)         # iteration 500: warm-up done
    assert lr_at(fake_tx, 0) == 0.0
    assert lr_at(fake_tx, 50) == pytest.approx(50 / 500, rel=1e-4)


def test_loop_runs_a_round_as_its_separately_compiled_iterations(tiny, tmp_path):
    """A chunk of one DMD round calls the generator and fake-score iteration programs, never the five-iteration
    program (too slow to compile at paper scale); state and log match the one-program round's."""
    from dmdjax import loop
    from dmdjax.checkpoint import Checkpointer
    model, params, cfg = tiny
    round_fn = distill.make_step(model, cfg, jax.random.PRNGKey(1), sample_shape=(4,))
    assert len(round_fn.parts) == 5 and len(set(map(id, round_fn.parts))) == 2
    traced = []

    def whole(state, consts):
        traced.append(1)
        return round_fn(state, consts)

    runs = {}
    for name, chunk, fn in (("parts", 5, whole), ("scan", 10, round_fn)):
        if name == "parts":
            whole.parts = round_fn.parts
        runs[name] = loop.run_loop(fn, distill.init_state(params, cfg), distill.StepConsts(params, {}), num_steps=10,
                                   ckpt=Checkpointer(tmp_path / name), log_path=tmp_path / f"{name}.jsonl",
                                   chunk=chunk, ckpt_every=0, progress=False, steps_per_call=5)
    assert not traced
    for a, b in zip(jax.tree.leaves(runs["parts"]), jax.tree.leaves(runs["scan"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    logs = {name: loop.read_log(tmp_path / f"{name}.jsonl") for name in runs}
    assert logs["parts"]["step"].tolist() == list(range(10))
    assert loop.read_series(tmp_path / "parts.jsonl", "dm_loss")[0].tolist() == [0, 5]
    np.testing.assert_allclose(logs["parts"]["fake_loss"], logs["scan"]["fake_loss"], rtol=1e-5)
    assert logs["parts"]["gen_update"].tolist() == [1, 0, 0, 0, 0] * 2
