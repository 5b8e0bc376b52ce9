"""Transition counts backed off to popularity: a non-neural floor (PROTOCOL.md, simple baselines).

From the training split, C[a, b] = how often item b directly follows item a (in the time-sorted
mixed sequences). For a history whose last k = ``cfg.transitions_k`` items are h_1..h_k,
    score(b) = sum_j C[h_j, b] + pop(b) / (max pop + 1),
so the transition counts decide and the training popularity only orders items with equal counts
(the second term is below 1). Scores are exact small rationals: many items tie, so report this
row with the average-rank tie policy beside the C2DSR rule (PROTOCOL.md, "Ties").
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn as nn

from hafvt.config import Config
from hafvt.data.batches import VIEW_INDEX
from hafvt.data.c2dsr import Scenario


def transition_pairs(items: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) for every consecutive pair inside a line of a CSR split."""
    keep = np.ones(len(items) - 1, dtype=bool) if len(items) > 1 else np.zeros(0, dtype=bool)
    keep[offsets[1:-1] - 1] = False  # no pair across line boundaries
    return items[:-1][keep], items[1:][keep]


class Transitions(nn.Module):
    trainable = False
    views = ("xy",)

    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__()
        self.n_items, self.k = scn.n_items, cfg.transitions_k
        train = scn.split("train")
        a, b = transition_pairs(np.asarray(train.items, dtype=np.int64), np.asarray(train.offsets))
        idx = torch.from_numpy(np.stack([a, b]))
        # rows 0..n_items (the last row = padding, empty), columns 0..n_items-1
        C = torch.sparse_coo_tensor(idx, torch.ones(len(a), dtype=torch.float64), (self.n_items + 1, self.n_items),
                                    check_invariants=True)
        self.register_buffer("C", C.coalesce(), persistent=False)
        pop = np.bincount(np.asarray(train.items), minlength=self.n_items)[: self.n_items].astype(np.float64)
        self.register_buffer("pop", torch.from_numpy(pop / (pop.max() + 1.0)), persistent=False)

    @torch.no_grad()
    def scores(self, batch: dict) -> torch.Tensor:
        hist = batch["seq"][:, VIEW_INDEX["xy"], -self.k :]  # (B, k), padding id = n_items
        B = hist.shape[0]
        rows = torch.arange(B, device=hist.device).repeat_interleave(hist.shape[1])
        S = torch.sparse_coo_tensor(torch.stack([rows, hist.reshape(-1)]), torch.ones(rows.numel(), dtype=torch.float64, device=hist.device),
                                    (B, self.n_items + 1), check_invariants=False)
        with warnings.catch_warnings():  # sparse @ sparse goes through CSR ("beta" warning)
            warnings.simplefilter("ignore", UserWarning)
            counts = torch.sparse.mm(S, self.C).to_dense()
        return counts + self.pop
