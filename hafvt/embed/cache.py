"""The embedding cache the models read: ``<scenario>/embeddings/<name>/``.

Files: ``image.npy`` and/or ``text.npy`` (float32, (n_x+n_y, e), L2-normalised rows in global
item-id order), ``image_source.npy`` / ``text_source.npy`` (int8: where each row came from, see
``SOURCES``) and ``manifest.json`` (written last: a cache without it is incomplete). While a run
is in progress, finished shards live in ``shards/`` and a rerun resumes from them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EMBED_DIR = "embeddings"
MANIFEST = "manifest.json"
TABLES = ("image", "text")
# row sources per table: 0 = the item's own image/title, 1 = the other modality, 2 = the domain mean
SOURCES = {"image": ("image", "title_text", "domain_mean"), "text": ("title", "image", "domain_mean")}


@dataclass
class EmbeddingTables:
    image: np.ndarray | None
    text: np.ndarray | None
    manifest: dict
    path: Path
    image_source: np.ndarray | None = None
    text_source: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.manifest["embed_dim"])


def default_cache_name(model: str, pretrained: str) -> str:
    """``<model>__<tag>``, ``<model>__random-init`` or ``<model>__<checkpoint file stem>``."""
    p = Path(str(pretrained))
    tag = p.stem if (p.suffix or len(p.parts) > 1) else str(pretrained)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{model}__{tag}").strip("-")


CACHE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_cache_name(name: str) -> str:
    """A cache name is one plain folder under ``<scenario>/embeddings/``, never a path."""
    if not CACHE_NAME.fullmatch(name):
        raise ValueError(f"--name {name!r}: a cache name is a plain folder name (letters, digits, '.', '_', '-', "
                         f"starting with a letter or digit), made in <scenario>/embeddings/")
    return name


def cache_dir(scenario_dir: str | Path, name: str) -> Path:
    """``<scenario>/embeddings/<name>``; a name that is not one plain folder is a ValueError."""
    return Path(scenario_dir) / EMBED_DIR / check_cache_name(name)


def list_caches(scenario_dir: str | Path) -> list[str]:
    root = Path(scenario_dir) / EMBED_DIR
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file()) if root.is_dir() else []


def encoder_caches(scenario_dir: str | Path) -> list[str]:
    """The caches an encoder made (not the demo's oracle tables of latent attributes, a diagnostic)."""
    root = Path(scenario_dir) / EMBED_DIR
    return [n for n in list_caches(scenario_dir) if not json.loads((root / n / MANIFEST).read_text()).get("oracle")]


def load_embeddings(scenario_dir: str | Path, name: str | None = None) -> EmbeddingTables:
    """Read a complete cache; ``name=None`` takes the only encoder cache present (``encoder_caches``)."""
    present = list_caches(scenario_dir)
    hint = (f"run `hafvt embed {scenario_dir} --model NAME --pretrained TAG|PATH|random-init` "
            f"(offline demo: `hafvt demo-encoder {scenario_dir}` first)")
    if name is None:
        encoders = encoder_caches(scenario_dir)
        if not encoders:
            raise FileNotFoundError(f"{scenario_dir}: no embedding cache in {EMBED_DIR}/; {hint}")
        if len(encoders) > 1:
            raise ValueError(f"{scenario_dir}: several embedding caches, pick one by name: {', '.join(encoders)}")
        name = encoders[0]
    path = cache_dir(scenario_dir, name)
    if not (path / MANIFEST).is_file():
        extra = f" (present: {', '.join(present)})" if present else ""
        state = "is incomplete (no manifest.json; rerun the same command to resume)" if path.is_dir() else "not found"
        raise FileNotFoundError(f"embedding cache {path} {state}{extra}; {hint}")
    manifest = json.loads((path / MANIFEST).read_text())
    arrays = {}
    for f in (*TABLES, *(f"{t}_source" for t in TABLES)):
        arrays[f] = np.load(path / f"{f}.npy") if (path / f"{f}.npy").is_file() else None
    for t in TABLES:
        if (arrays[t] is None) != (t not in manifest["tables"]):
            raise ValueError(f"{path}: manifest lists tables {manifest['tables']} but {t}.npy disagrees")
        if arrays[t] is not None and arrays[t].shape != (manifest["n_items"], manifest["embed_dim"]):
            raise ValueError(f"{path}/{t}.npy has shape {arrays[t].shape}, manifest says "
                             f"({manifest['n_items']}, {manifest['embed_dim']})")
    return EmbeddingTables(manifest=manifest, path=path, **arrays)
