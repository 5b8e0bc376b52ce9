"""Shared test helpers: a tiny demo scenario with fixed embedding tables."""
import json
from pathlib import Path

import numpy as np

from hafvt.data.demo import write_demo

REPO = Path(__file__).resolve().parents[1]


def write_fixture_tables(scenario_dir: Path, n_items: int, dim: int = 32, seed: int = 0) -> Path:
    """Fixed random image/text tables in the embedding-cache format (labelled as a test fixture)."""
    out = Path(scenario_dir) / "embeddings" / "test-fixture"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in ("image", "text"):
        t = rng.standard_normal((n_items, dim)).astype(np.float32)
        np.save(out / f"{name}.npy", t / np.linalg.norm(t, axis=1, keepdims=True))
    (out / "manifest.json").write_text(json.dumps({
        "model": "test-fixture", "pretrained": "random-init", "tables": ["image", "text"],
        "n_items": n_items, "embed_dim": dim, "label": "random tables for unit tests"}))
    return out


def tiny_demo(tmp_path: Path, seed: int = 0) -> Path:
    d = write_demo(tmp_path / "tiny", size="tiny", seed=seed, images=False)
    from hafvt.data.c2dsr import read_scenario

    scn = read_scenario(d)
    write_fixture_tables(d, scn.n_items)
    return d
