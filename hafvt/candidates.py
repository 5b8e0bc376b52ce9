"""The papers' sampled candidate sets: target + negatives from the target's domain.

Negatives are uniform WITH replacement over the target's own domain, excluding
only the target. Drawn once per (split, n_neg, seed) and saved, so every model
is scored on the same candidates.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hafvt.io import atomic_save_npy


def draw_candidates(
    targets: np.ndarray, n_x: int, n_y: int, n_neg: int = 999, seed: int = 0
) -> np.ndarray:
    """(n, 1+n_neg) int64 global item ids; column 0 is the target.

    ``targets`` are global ids (X: 0..n_x-1, Y: n_x..n_x+n_y-1). Each negative is
    drawn from the n_dom-1 other items of the target's domain by drawing
    u in [0, n_dom-1) and shifting u >= target's local id up by one.
    """
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if n_x < 2 or n_y < 2:
        raise ValueError("each domain needs at least 2 items to draw negatives")
    if t.size and (t.min() < 0 or t.max() >= n_x + n_y):
        raise ValueError(f"target ids must lie in [0, {n_x + n_y})")
    is_x = t < n_x
    offset = np.where(is_x, 0, n_x)
    size = np.where(is_x, n_x, n_y)
    local = t - offset
    rng = np.random.Generator(np.random.PCG64(seed))
    draw = rng.integers(0, (size - 1)[:, None], size=(t.size, n_neg), dtype=np.int64)
    draw += draw >= local[:, None]
    out = np.empty((t.size, 1 + n_neg), dtype=np.int64)
    out[:, 0] = t
    out[:, 1:] = draw + offset[:, None]
    return out


def candidates_path(scenario_dir: str | os.PathLike, split: str, seed: int, n_neg: int) -> Path:
    """``<scenario_dir>/candidates/<split>-neg<n_neg>-seed<seed>.npy``."""
    return Path(scenario_dir) / "candidates" / f"{split}-neg{n_neg}-seed{seed}.npy"


def load_or_draw(
    scenario_dir: str | os.PathLike,
    split: str,
    targets: np.ndarray,
    n_x: int,
    n_y: int,
    n_neg: int = 999,
    seed: int = 0,
) -> np.ndarray:
    """Load the saved candidates for ``split``, or draw and save them atomically.

    Raises ValueError if a saved file's column 0 differs from ``targets``.
    """
    path = candidates_path(scenario_dir, split, seed, n_neg)
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if path.exists():
        cand = np.load(path, allow_pickle=False)
        if cand.ndim != 2 or cand.shape != (t.size, 1 + n_neg) or not np.array_equal(cand[:, 0], t):
            raise ValueError(
                f"{path}: saved candidates do not match the given targets "
                f"(shape {cand.shape}, expected {(t.size, 1 + n_neg)}); the scenario changed — "
                "delete the file to redraw"
            )
        return cand.astype(np.int64, copy=False)
    cand = draw_candidates(t, n_x, n_y, n_neg=n_neg, seed=seed)
    atomic_save_npy(path, cand)
    return cand
