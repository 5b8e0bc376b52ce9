"""What the sequential baselines share: an item table, next-item cross-entropy over every slot, scoring.

A baseline reads the merged view S^{X+Y} (view index 2 of the batch tensors), turns it into one
hidden state per slot, ``H = self.hidden_states(batch)`` of shape (B, L, d), and scores every item
by a dot product with the item table (the output layer is tied to the input embeddings, as in
SASRec and SR-GNN). Training follows the trainer's convention (PROTOCOL.md step 4): every slot with
a next-item target is a softmax/cross-entropy example over all |X|+|Y| items. Evaluation scores
every item from the last slot, which always holds the newest history item (views are left-padded).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hafvt.config import Config
from hafvt.data.batches import VIEW_INDEX
from hafvt.data.c2dsr import Scenario

XY = VIEW_INDEX["xy"]


def target_rows(tgt: torch.Tensor, n: int | None) -> torch.Tensor:
    """Indices of the flattened slots that hold a target (``tgt >= 0``), in order.

    ``n`` is their number when the host knows it (the trainer's ``counts``): then no device sync.
    """
    flat = tgt.reshape(-1)
    valid = flat >= 0
    if n is None:
        n = int(valid.sum())
    return torch.argsort((~valid).to(torch.int8), stable=True)[:n]


class NextItemModel(nn.Module):
    """Base of the single-sequence baselines (GRU4Rec, SASRec, SR-GNN)."""

    views = ("xy",)

    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__()
        self.cfg, self.n_x, self.n_items = cfg, scn.n_x, scn.n_items
        self.d = cfg.hidden
        self.E = nn.Embedding(self.n_items + 1, self.d, padding_idx=self.n_items)  # last row = padding
        nn.init.normal_(self.E.weight, std=0.02)
        with torch.no_grad():
            self.E.weight[self.n_items].zero_()

    def hidden_states(self, batch: dict) -> torch.Tensor:  # (B, L, d)
        raise NotImplementedError

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h (n, d) -> scores of every item (n, |X|+|Y|)."""
        return h @ self.E.weight[: self.n_items].to(h.dtype).T

    def loss(self, batch: dict, counts: dict | None = None) -> torch.Tensor:
        """Mean cross-entropy of the next mixed item over every slot with a target."""
        tgt = batch["tgt"][:, XY]
        rows = target_rows(tgt, None if counts is None else counts["xy"])
        h = self.hidden_states(batch).flatten(0, 1)[rows]
        return F.cross_entropy(self.item_logits(h).float(), tgt.reshape(-1)[rows])

    @torch.no_grad()
    def scores(self, batch: dict) -> torch.Tensor:
        return self.item_logits(self.hidden_states(batch)[:, -1]).float()
