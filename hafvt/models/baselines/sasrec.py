"""SASRec (Kang and McAuley, "Self-attentive sequential recommendation", ICDM 2018), on S^{X+Y}.

Section III: E^ = M_s + P (item plus learned position embedding), then ``cfg.n_blocks`` blocks of
    S = SA(E^) with a causal mask (eq. 2-3), F = ReLU(S W1 + b1) W2 + b2 (eq. 4),
each sub-layer wrapped as g(x) = x + Dropout(g(LayerNorm(x))) (section III-C), a final LayerNorm,
and the relevance r_{i,t} = F_t M_i^T with the shared item embedding M (eq. 6, section III-D).

Differences from the paper: the loss is softmax cross-entropy over all items at every position
(the paper uses binary cross-entropy with one sampled negative per position, eq. 7); positions are
1..len counted from the oldest real item of a left-padded history (0 = padding) rather than
absolute slot indices; padded keys are masked out of the attention.
"""
from __future__ import annotations


from hafvt.config import Config
from hafvt.data.c2dsr import Scenario
from hafvt.models.attention import Encoder
from hafvt.models.baselines.base import XY, NextItemModel


class SASRec(NextItemModel):
    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__(cfg, scn)
        self.enc = Encoder(self.d, cfg)

    def hidden_states(self, batch: dict):
        return self.enc(self.E(batch["seq"][:, XY]), batch["pos"][:, XY])[0]
