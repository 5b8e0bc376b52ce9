"""GRU4Rec (Hidasi, Karatzoglou, Baltrunas and Tikk, "Session-based recommendations with recurrent
neural networks", ICLR 2016), on the merged sequence S^{X+Y}.

Section 3.1: the input is the item's embedding, a GRU layer updates the hidden state
    z_t = s(W_z x_t + U_z h_{t-1}),  r_t = s(W_r x_t + U_r h_{t-1})
    h^_t = tanh(W x_t + U (r_t * h_{t-1})),  h_t = (1 - z_t) h_{t-1} + z_t h^_t
and a feed-forward output layer scores every item from h_t.

Differences from the paper, to fit the shared harness:
- Loss: softmax cross-entropy over all items at every position (the paper's section 3.1.3 uses
  session-parallel mini-batches with sampled BPR/TOP1 ranking losses; cross-entropy over all items is
  the variant the authors' later work recommends and what every model here is trained with).
- The output layer is a linear map followed by a dot product with the item table (tied weights).
- Histories are left-padded to ``maxlen``; the GRU also steps over the leading padding (a zero
  input), which only changes the state it starts the real items from. No packing: packing needs
  the lengths on the host, a device sync per batch.
"""
from __future__ import annotations

import torch.nn as nn

from hafvt.config import Config
from hafvt.data.c2dsr import Scenario
from hafvt.models.baselines.base import XY, NextItemModel

N_LAYERS = 1  # the paper's best results use a single GRU layer (section 4.2)


class GRU4Rec(NextItemModel):
    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__(cfg, scn)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(self.d, self.d, num_layers=N_LAYERS, batch_first=True)
        self.out = nn.Linear(self.d, self.d)

    def hidden_states(self, batch: dict):
        x = self.drop(self.E(batch["seq"][:, XY]))  # (B, L, d)
        h, _ = self.gru(x)
        return self.out(self.drop(h))
