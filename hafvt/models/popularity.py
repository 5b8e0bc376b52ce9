"""Popularity: score every item by how often it occurs in the training split (the floor)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


class Popularity(nn.Module):
    trainable = False

    def __init__(self, n_items: int, train_items: np.ndarray):
        super().__init__()
        counts = np.bincount(np.asarray(train_items), minlength=n_items)[:n_items].astype(np.float64)
        self.register_buffer("counts", torch.from_numpy(counts))

    @torch.no_grad()
    def scores(self, batch: dict) -> torch.Tensor:
        return self.counts.expand(len(batch["target"]), -1)
