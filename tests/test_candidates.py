import numpy as np
import pytest

from hafvt.candidates import candidates_path, draw_candidates, load_or_draw

N_X, N_Y = 7, 5
TARGETS = np.array([0, 3, 6, 7, 9, 11, 2, 8])


def test_shape_dtype_and_target_column():
    c = draw_candidates(TARGETS, N_X, N_Y, n_neg=50, seed=0)
    assert c.shape == (len(TARGETS), 51)
    assert c.dtype == np.int64
    assert np.array_equal(c[:, 0], TARGETS)


def test_negatives_in_domain_never_target_and_cover_domain():
    c = draw_candidates(TARGETS, N_X, N_Y, n_neg=400, seed=3)
    for t, row in zip(TARGETS, c):
        neg = row[1:]
        lo, hi = (0, N_X) if t < N_X else (N_X, N_X + N_Y)
        assert neg.min() >= lo and neg.max() < hi
        assert not (neg == t).any()
        # with 400 draws every other item of the domain appears (uniform), duplicates too
        assert set(neg.tolist()) == set(range(lo, hi)) - {t}
        assert len(np.unique(neg)) < len(neg)


def test_roughly_uniform():
    c = draw_candidates(np.array([2] * 200), N_X, N_Y, n_neg=300, seed=1)
    counts = np.bincount(c[:, 1:].ravel(), minlength=N_X)
    assert counts[2] == 0
    others = counts[[0, 1, 3, 4, 5, 6]]
    assert np.all(np.abs(others / others.sum() - 1 / 6) < 0.01)


def test_deterministic_per_seed():
    a = draw_candidates(TARGETS, N_X, N_Y, n_neg=20, seed=5)
    b = draw_candidates(TARGETS, N_X, N_Y, n_neg=20, seed=5)
    c = draw_candidates(TARGETS, N_X, N_Y, n_neg=20, seed=6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_candidates_path(tmp_path):
    p = candidates_path(tmp_path, "test", 0, 999)
    assert p == tmp_path / "candidates" / "test-neg999-seed0.npy"


def test_load_or_draw_round_trip(tmp_path):
    a = load_or_draw(tmp_path, "valid", TARGETS, N_X, N_Y, n_neg=10, seed=2)
    path = candidates_path(tmp_path, "valid", 2, 10)
    assert path.exists()
    assert np.array_equal(np.load(path), a)
    b = load_or_draw(tmp_path, "valid", TARGETS, N_X, N_Y, n_neg=10, seed=2)
    assert np.array_equal(a, b)
    # the saved file is what is returned, not a fresh draw
    np.save(path, a[:, ::-1][:, np.r_[10, 0:10]])
    c = load_or_draw(tmp_path, "valid", TARGETS, N_X, N_Y, n_neg=10, seed=2)
    assert np.array_equal(c[:, 0], TARGETS) and not np.array_equal(c, a)


def test_load_or_draw_mismatched_targets_raise(tmp_path):
    load_or_draw(tmp_path, "test", TARGETS, N_X, N_Y, n_neg=10, seed=0)
    changed = TARGETS.copy()
    changed[0] = 1
    with pytest.raises(ValueError, match="test-neg10-seed0.npy.*scenario changed"):
        load_or_draw(tmp_path, "test", changed, N_X, N_Y, n_neg=10, seed=0)
    with pytest.raises(ValueError, match="test-neg10-seed0.npy"):
        load_or_draw(tmp_path, "test", TARGETS[:-1], N_X, N_Y, n_neg=10, seed=0)


def test_empty_targets():
    c = draw_candidates(np.array([], dtype=np.int64), N_X, N_Y, n_neg=5)
    assert c.shape == (0, 6)
