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

import torch
import torch.nn as nn
import torch.nn.functional as F

from hafvt.config import Config
from hafvt.data.c2dsr import Scenario
from hafvt.models.baselines.base import XY, NextItemModel


class SASBlock(nn.Module):
    """One self-attention block (eq. 2-5), pre-LayerNorm residual form of section III-C."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.p = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.o(a.transpose(1, 2).reshape(B, L, d)))
        return x + self.drop(self.ffn(self.ln2(x)))


def causal_mask(pos: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L): slot i sees real slots j <= i, and always itself (no empty softmax row)."""
    L = pos.shape[1]
    eye = torch.eye(L, dtype=torch.bool, device=pos.device)
    causal = torch.ones(L, L, dtype=torch.bool, device=pos.device).tril()
    return (causal[None] & (pos > 0)[:, None, :] | eye)[:, None]


class SelfAttentionEncoder(nn.Module):
    """E^ = M_s + P, dropout, ``cfg.n_blocks`` causal blocks, final LayerNorm (section III-B, C)."""

    def __init__(self, d: int, cfg: Config):
        super().__init__()
        self.P = nn.Embedding(cfg.maxlen + 1, d, padding_idx=0)
        nn.init.normal_(self.P.weight, std=0.02)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(SASBlock(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks))
        self.ln = nn.LayerNorm(d)

    def forward(self, M_s: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self.drop(M_s + self.P(pos)) * (pos > 0)[..., None]
        allowed = causal_mask(pos)
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln(x)


class SASRec(NextItemModel):
    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__(cfg, scn)
        self.enc = SelfAttentionEncoder(self.d, cfg)

    def hidden_states(self, batch: dict):
        return self.enc(self.E(batch["seq"][:, XY]), batch["pos"][:, XY])
