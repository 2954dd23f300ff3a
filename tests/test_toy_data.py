import jax
import numpy as np
import pytest

from dmdjax.data import toy


def test_chessboard_on_even_squares():
    x = np.asarray(toy.chessboard(jax.random.PRNGKey(0), 20_000))
    assert x.shape == (20_000, 4) and np.all(x[:, 2:] == 0)
    assert np.all(np.abs(x[:, :2]) <= 2)
    cells = np.floor(x[:, :2] + 2).astype(int)
    assert np.all((cells.sum(1) % 2) == 0)
    counts = np.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    assert (counts > 0).sum() == 8 and counts[counts > 0].min() > 0.8 * 20_000 / 8


def test_gmm_components():
    x = np.asarray(toy.gmm(jax.random.PRNGKey(1), 50_000))
    r = np.hypot(x[:, 0], x[:, 1])
    assert abs(np.median(r) - 2.0) < 0.05
    assert np.std(x[:, 2]) == pytest.approx(0.2, rel=0.05) and np.std(x[:, 3]) == pytest.approx(0.2, rel=0.05)
    assert np.std(r) == pytest.approx(0.2, rel=0.1)            # radial spread = component std
    sectors = np.bincount((np.mod(np.arctan2(x[:, 1], x[:, 0]), 2 * np.pi) / (2 * np.pi) * 8).astype(int))
    assert sectors.min() > 0.9 * 50_000 / 8                      # means spread evenly around the circle


def test_moons_two_halves():
    x = np.asarray(toy.moons(jax.random.PRNGKey(2), 10_000))
    assert np.all(x[:, 2:] == 0) and abs(np.mean(x[:, 0])) < 0.1 and abs(np.mean(x[:, 1])) < 0.1


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown toy dataset 'spiral'"):
        toy.get_sampler("spiral")
