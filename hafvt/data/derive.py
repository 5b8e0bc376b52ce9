"""Derive a scenario from the splits of another.

The public Food-Kitchen release in ``../shared`` lacks its train split. ``derive`` makes a
small real-data benchmark from it: train = a fraction of the valid split's users, valid =
the rest, test = the test split. Its results are not comparable with the papers' tables.
"""
from __future__ import annotations

import numpy as np

from hafvt.data.c2dsr import Scenario

NOT_COMPARABLE = "derived real-data mini benchmark: trained on part of the valid split, not comparable with the paper"


def _source_of(src: Scenario) -> dict:
    """The source scenario as provenance records it: a portable path and its data hash."""
    if src.source is None:
        return {"source": src.name}
    from hafvt.data.c2dsr import data_hash
    from hafvt.provenance import portable

    return {"source": portable(src.source), "source_hash": data_hash(src.source)}


def derive(src: Scenario, train_from: str = "valid", train_fraction: float = 0.9, seed: int = 0) -> Scenario:
    """Split ``src.<train_from>`` by user into a train part and a new valid part; keep test."""
    if train_from not in ("valid", "test"):
        raise ValueError(f"train_from must be 'valid' or 'test', got {train_from!r}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    pool = src.split(train_from)
    users = np.unique(pool.uid)
    rng = np.random.default_rng(seed)
    train_users = set(rng.permutation(users)[: int(round(train_fraction * len(users)))].tolist())
    in_train = np.array([u in train_users for u in pool.uid])
    other = "test" if train_from == "valid" else "valid"
    for part, n in (("train", int(in_train.sum())), ("valid", int((~in_train).sum()))):
        if n == 0:
            raise ValueError(f"derive: train_fraction {train_fraction} of the {len(users)} users of the {train_from} split "
                             f"leaves the new {part} split empty; choose another fraction or a larger split")
    return Scenario(
        items_x=src.items_x, items_y=src.items_y, users=src.users,
        train=pool.subset(np.flatnonzero(in_train)),
        valid=pool.subset(np.flatnonzero(~in_train)),
        test=src.split(other),
        name=f"{src.name}-derived",
        report={**_source_of(src), "train_from": train_from,
                "train_fraction": train_fraction, "seed": seed, "label": NOT_COMPARABLE},
    )
