"""What the sequential baselines share: an item table, next-item cross-entropy over every slot, scoring.

A baseline reads the merged view S^{X+Y} (view index 2 of the batch tensors), turns it into one
hidden state per slot, ``H = self.hidden_states(batch)`` of shape (B, L, d), and scores every item
by a dot product with the item table (the output layer is tied to the input embeddings, as in
SASRec and SR-GNN). Training follows the trainer's convention (PROTOCOL.md step 4): every slot with
a next-item target is a softmax/cross-entropy example over all |X|+|Y| items. Evaluation scores
every item from the last slot, which always holds the newest history item (views are left-padded).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn as nn
import torch.nn.functional as F

from hafvt.config import Config
from hafvt.data.batches import VIEW_INDEX, target_rows
from hafvt.data.c2dsr import Scenario

XY = VIEW_INDEX["xy"]


def item_table(n_items: int, d: int) -> nn.Embedding:
    """The learnable item table E, N(0, 0.02) rows, with a zero padding row last (index ``n_items``)."""
    E = nn.Embedding(n_items + 1, d, padding_idx=n_items)
    nn.init.normal_(E.weight, std=0.02)
    with torch.no_grad():
        E.weight[n_items].zero_()
    return E


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, sum_scale: dict | None = None) -> torch.Tensor:
    """The mean over rows, or with ``sum_scale`` the sum times ``sum_scale["xy"]``."""
    if sum_scale is None:
        return F.cross_entropy(logits, target)
    return F.cross_entropy(logits, target, reduction="sum") * sum_scale["xy"]


class ItemTableModel(nn.Module):
    """A baseline with one item table E over |X|+|Y| items (``cfg.hidden`` wide) and the three views."""

    views = ("x", "y", "xy")

    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__()
        self.cfg, self.n_x, self.n_items, self.d = cfg, scn.n_x, scn.n_items, cfg.hidden
        self.E = item_table(self.n_items, self.d)


class NextItemModel(ItemTableModel, ABC):
    """Base of the single-sequence baselines (GRU4Rec, SASRec, SR-GNN)."""

    views = ("xy",)

    @abstractmethod
    def hidden_states(self, batch: dict) -> torch.Tensor:
        """One hidden state per slot of the merged view, (B, L, d)."""

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h (n, d) -> scores of every item (n, |X|+|Y|)."""
        return h @ self.E.weight[: self.n_items].to(h.dtype).T

    def loss(self, batch: dict, counts: dict | None = None, sum_scale: dict | None = None) -> torch.Tensor:
        """Mean cross-entropy of the next mixed item over every slot with a target.

        ``sum_scale["xy"]``: the sum times that factor instead (a rank's share, ``hafvt.distributed``).
        """
        tgt = batch["tgt"][:, XY]
        rows = target_rows(tgt, None if counts is None else counts["xy"])
        h = self.hidden_states(batch).flatten(0, 1)[rows]
        return cross_entropy(self.item_logits(h).float(), tgt.reshape(-1)[rows], sum_scale)

    @torch.no_grad()
    def scores(self, batch: dict) -> torch.Tensor:
        return self.item_logits(self.hidden_states(batch)[:, -1]).float()
