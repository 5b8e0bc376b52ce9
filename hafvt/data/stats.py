"""Scenario statistics as in the papers' Table 1, plus the distributions the notebooks plot."""
from __future__ import annotations

import numpy as np

from hafvt.data.c2dsr import Scenario


def table1(scn: Scenario) -> dict:
    """Items per domain, sequences per split, valid/test targets per domain, mean length."""
    out = {"items_x": scn.n_x, "items_y": scn.n_y, "users": len(scn.users),
           "train": None if scn.train is None else len(scn.train)}
    for split in ("valid", "test"):
        dom = scn.split(split).target_domains(scn.n_x)
        out[f"{split}_x"] = int((dom == 0).sum())
        out[f"{split}_y"] = int((dom == 1).sum())
    present = [s for s in (scn.train, scn.valid, scn.test) if s is not None]
    lengths = np.concatenate([s.lengths for s in present])
    out["avg_length"] = _mean(lengths)
    out["avg_length_by_split"] = {name: _mean(s.lengths)
                                  for name, s in (("train", scn.train), ("valid", scn.valid), ("test", scn.test)) if s is not None}
    return out


def _mean(x: np.ndarray) -> float | None:
    """A mean length, rounded; None for no lines (not NaN, which is not JSON)."""
    return round(float(x.mean()), 2) if len(x) else None


def length_distribution(scn: Scenario) -> dict[str, dict[int, int]]:
    """Per split: sequence length -> number of lines."""
    out = {}
    for name in ("train", "valid", "test"):
        seqs = getattr(scn, name)
        if seqs is not None:
            values, counts = np.unique(seqs.lengths, return_counts=True)
            out[name] = {int(v): int(c) for v, c in zip(values, counts)}
    return out


def item_popularity(scn: Scenario, splits=("train", "valid", "test")) -> np.ndarray:
    """Interaction count of every item (global ids) over the given splits."""
    counts = np.zeros(scn.n_items, dtype=np.int64)
    for name in splits:
        seqs = getattr(scn, name)
        if seqs is not None:
            counts += np.bincount(seqs.items, minlength=scn.n_items)
    return counts


def format_table1(stats: dict) -> str:
    """A readable two-row table like the papers' Table 1."""
    train = "—" if stats["train"] is None else f"{stats['train']:,}"
    rows = [("domain", "#items", "#train", "#valid", "#test", "avg.length"),
            ("X", f"{stats['items_x']:,}", train, f"{stats['valid_x']:,}", f"{stats['test_x']:,}", "–" if stats["avg_length"] is None else f"{stats['avg_length']:.2f}"),
            ("Y", f"{stats['items_y']:,}", "", f"{stats['valid_y']:,}", f"{stats['test_y']:,}", "")]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)
