"""The causal self-attention encoder shared by HAF-VT (one per view and modality), SASRec and C2DSR."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hafvt.config import Config


def causal_mask(pos: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L): slot i attends to real slots j <= i, and always to itself (no empty softmax row)."""
    L = pos.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=pos.device).tril()
    eye = torch.eye(L, dtype=torch.bool, device=pos.device)
    return ((causal[None] & (pos > 0)[:, None, :]) | eye)[:, None]


class Block(nn.Module):
    """Pre-LN transformer block: causal self-attention (HAF-VT eq. 3, SASRec eqs. 2-5) and a ReLU feed-forward layer."""

    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, need_weights: bool = False):
        B, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if need_weights:  # explicit softmax(QK^T / sqrt(d_k)) so the weights can be shown
            logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            weights = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
            a = weights @ v
        else:
            weights = None
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, d)))
        x = x + self.drop(self.ff(self.ln2(x)))
        return x, weights


class Encoder(nn.Module):
    """Attention(F) of HAF-VT eq. (1), SASRec's encoder: positional embedding, dropout, causal blocks, final norm."""

    def __init__(self, d: int, cfg: Config):
        super().__init__()
        self.pos = nn.Embedding(cfg.maxlen + 1, d, padding_idx=0) if cfg.positional == "learned" else None
        if self.pos is not None:  # on the scale of the item rows, so position does not drown the item
            nn.init.normal_(self.pos.weight, std=0.02)
            with torch.no_grad():
                self.pos.weight[0].zero_()
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks))
        self.ln = nn.LayerNorm(d)

    def forward(self, F_seq: torch.Tensor, pos: torch.Tensor, need_weights: bool = False):
        real = pos > 0
        allowed = causal_mask(pos)
        x = F_seq + self.pos(pos) if self.pos is not None else F_seq
        x = self.drop(x) * real[..., None]
        weights = []
        for block in self.blocks:
            x, w = block(x, allowed, need_weights)
            weights.append(w)
        return self.ln(x), weights
