"""Oracle embeddings for the demo: its latent item attributes as E_img / E_tex (an upper bound).

A perfect image encoder could read an item's look (colour, shape, texture) and its domain (the
background) off the picture; a perfect title encoder its taste (the cluster whose words the title
carries) and its domain (the noun). The oracle cache holds exactly that, from the demo's
``latent.json``, in the embedding-cache format (``hafvt.embed.cache``) under the name
``demo-oracle``: select it with the config key ``embeddings: demo-oracle``. It bounds what fusing
images and titles can add on the demo; it is not CLIP.

Both tables share one layout of one-hot blocks [colour | shape | texture | domain | taste]: the
image rows fill the look and domain blocks, the text rows the domain and taste blocks. Each
filled block has norm 1 before the row is L2-normalised.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

import hafvt
from hafvt.embed.cache import MANIFEST, cache_dir
from hafvt.io import atomic_save_npy, atomic_write_json

ORACLE_MODEL = "demo-oracle"
LABEL = "oracle: the demo's latent item attributes, an upper bound; not CLIP"
IMAGE_BLOCKS = ("colour", "shape", "texture", "domain")
TEXT_BLOCKS = ("domain", "cluster")


def _block_sizes(latents: dict) -> dict:
    from hafvt.data.demo import COLOURS, SHAPES, TEXTURES

    return {"colour": len(COLOURS), "shape": len(SHAPES), "texture": len(TEXTURES), "domain": 2,
            "cluster": int(latents["cluster"].max()) + 1}


def oracle_tables(latents: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """(image, text, layout): float32 (n_items, dim) unit rows and each block's column range."""
    sizes = _block_sizes(latents)
    layout, start = {}, 0
    for name, width in sizes.items():
        layout[name] = (start, start + width)
        start += width
    n = len(latents["cluster"])
    rows = np.arange(n)
    tables = []
    for blocks in (IMAGE_BLOCKS, TEXT_BLOCKS):
        t = np.zeros((n, start), np.float32)
        for name in blocks:
            t[rows, layout[name][0] + np.asarray(latents[name], np.int64)] = 1.0
        tables.append(t / np.linalg.norm(t, axis=1, keepdims=True))
    return tables[0], tables[1], layout


def write_oracle_cache(scenario_dir: str | Path, name: str = ORACLE_MODEL) -> Path:
    """Write ``<scenario>/embeddings/<name>/`` from the demo's ``latent.json`` (manifest last, so a
    cache interrupted while writing has none and is not read). Same latents, same bytes."""
    from hafvt.data.demo import load_latents

    scenario_dir = Path(scenario_dir)
    if not (scenario_dir / "latent.json").is_file():
        raise FileNotFoundError(f"{scenario_dir}/latent.json not found: oracle embeddings exist only for the demo "
                                f"scenario (`hafvt demo {scenario_dir}`)")
    latents = load_latents(scenario_dir)
    image, text, layout = oracle_tables(latents)
    n_x = int((latents["domain"] == 0).sum())
    out = cache_dir(scenario_dir, name)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # incomplete until the new manifest is written
    for table, rows in (("image", image), ("text", text)):
        atomic_save_npy(out / f"{table}.npy", rows)
        atomic_save_npy(out / f"{table}_source.npy", np.zeros(len(rows), np.int8))  # every row is the item's own
    latent_bytes = (scenario_dir / "latent.json").read_bytes()
    manifest = {
        "format": 1, "model": ORACLE_MODEL, "pretrained": "none (latent attributes)", "label": LABEL,
        "oracle": True, "random_init": False,
        "n_items": len(image), "n_x": n_x, "n_y": len(image) - n_x, "embed_dim": int(image.shape[1]),
        "tables": ["image", "text"], "dtype": "float32", "rows": "L2-normalised, global item-id order",
        "layout": {k: list(v) for k, v in layout.items()},
        "blocks": {"image": list(IMAGE_BLOCKS), "text": list(TEXT_BLOCKS)},
        "source": {"file": "latent.json", "sha256": hashlib.sha256(latent_bytes).hexdigest(),
                   "demo": json.loads((scenario_dir / "demo.json").read_text()).get("note")
                   if (scenario_dir / "demo.json").is_file() else None},
        "fallback": {"rule": "none: every item has latent attributes", "image": {"image": len(image)}, "text": {"title": len(text)}},
        "versions": {"hafvt": hafvt.__version__, "numpy": np.__version__},
    }  # no timestamp: the same latent.json gives the same bytes (and the same provenance hash)
    atomic_write_json(out / MANIFEST, manifest)
    return out
