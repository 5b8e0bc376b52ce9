"""Models by name. A model has ``scores(batch) -> (B, |X|+|Y|)`` (higher is better); a trainable one
also ``loss(batch, counts)``; a non-trainable one sets ``trainable = False``."""
from __future__ import annotations

import numpy as np

from hafvt.config import Config
from hafvt.data.c2dsr import Scenario


def needs_tables(cfg: Config) -> list[str]:
    """The frozen CLIP tables a configuration reads."""
    return [m for m in ("img", "tex") if cfg.model == "hafvt" and m in cfg.modalities]


def build_model(cfg: Config, scn: Scenario, tables: dict[str, np.ndarray] | None = None):
    tables = tables or {}
    if cfg.model == "hafvt":
        from hafvt.models.hafvt import HAFVT

        return HAFVT(cfg, scn.n_x, scn.n_y, tables.get("img"), tables.get("tex"))
    if cfg.model == "popularity":
        from hafvt.models.popularity import Popularity

        return Popularity(scn.n_items, scn.split("train").items)
    try:
        from hafvt.models import baselines
    except ImportError:
        baselines = None
    if baselines is not None and cfg.model in baselines.MODELS:
        return baselines.MODELS[cfg.model](cfg, scn)
    raise ValueError(f"unknown model {cfg.model!r}")
