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
        if d % n_heads:
            raise ValueError(f"config key n_heads={n_heads} must divide the attention width {d} (q, hidden or the tables' width)")
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


# --------------------------------------------------------------------------- K encoders as one
# K encoders of one width (HAF-VT's views x modalities) run as one: their parameters stacked on a
# leading dimension (K, ...) at every call, their K inputs of B rows folded into one batch of K*B rows.
# Encoder.forward and Block.forward run unchanged on the stacked form: every layer with parameters is
# replaced by one that applies the k-th encoder's parameters to the k-th group of rows (one batched
# matmul for the K linears); attention, dropout and ReLU have no parameters and see K*B rows. The
# parameters stay in the K modules (state dicts, checkpoints and optimizer states are unchanged) and
# the gradients flow back to them through the stacking.


class _StackedLinear:
    def __init__(self, mods):
        self.W = torch.stack([m.weight for m in mods])  # (K, out, in)
        self.b = torch.stack([m.bias for m in mods])  # (K, out)

    def __call__(self, x):  # (K*B, ..., in) -> (K*B, ..., out)
        K = len(self.W)
        y = torch.baddbmm(self.b[:, None], x.reshape(K, -1, x.shape[-1]), self.W.transpose(1, 2))
        return y.reshape(*x.shape[:-1], -1)


class _StackedLayerNorm:
    def __init__(self, mods):
        self.w, self.b, self.eps = torch.stack([m.weight for m in mods]), torch.stack([m.bias for m in mods]), mods[0].eps

    def __call__(self, x):
        K, d = self.w.shape
        y = F.layer_norm(x, (d,), eps=self.eps).reshape(K, -1, d)
        return torch.addcmul(self.b[:, None], y, self.w[:, None]).reshape(x.shape)


class _StackedEmbedding:
    def __init__(self, mods):
        self.W = torch.stack([m.weight for m in mods])  # (K, rows, d)

    def __call__(self, idx):  # (K*B, L) -> (K*B, L, d)
        k = torch.arange(len(self.W), device=idx.device).repeat_interleave(len(idx) // len(self.W))
        return self.W[k[:, None], idx]


class _Sequential(list):
    def __call__(self, x):
        for f in self:
            x = f(x)
        return x


class _Stacked:
    """An Encoder's or Block's attributes in stacked form; calling it runs that class's ``forward`` on them."""

    def __init__(self, mods):
        first = mods[0]
        self.__dict__.update({k: v for k, v in vars(first).items() if not k.startswith("_")})  # training, n_heads, dropout
        for name, child in first._modules.items():  # child None: an absent layer (positional='none')
            setattr(self, name, None if child is None else stack_modules([m._modules[name] for m in mods]))
        self._forward = type(first).forward

    def __call__(self, *args):
        return self._forward(self, *args)


def stack_modules(mods: list[nn.Module]):
    """One callable that runs K same-shaped modules, the k-th on the k-th of K groups of rows of its input."""
    first = mods[0]
    if isinstance(first, nn.Linear):
        return _StackedLinear(mods)
    if isinstance(first, nn.LayerNorm):
        return _StackedLayerNorm(mods)
    if isinstance(first, nn.Embedding):
        return _StackedEmbedding(mods)
    if isinstance(first, nn.ModuleList):
        return [stack_modules(list(ms)) for ms in zip(*mods)]
    if isinstance(first, nn.Sequential):
        return _Sequential(stack_modules(list(ms)) for ms in zip(*mods))
    if isinstance(first, (Encoder, Block)):
        return _Stacked(mods)
    if next(first.parameters(), None) is None:  # ReLU, Dropout: the same for every k
        return first
    raise TypeError(f"no stacked form for {type(first).__name__}")


def run_stacked(encoders: list[Encoder], F_seq: torch.Tensor, pos: torch.Tensor, need_weights: bool = False):
    """``encoders[k](F_seq[k], pos[k])`` for every k as one batched pass; ``F_seq`` (K, B, L, d), ``pos`` (K, B, L).

    Returns H (K, B, L, d) and, per block, the attention weights (K, B, heads, L, L) or None.
    """
    K, B = pos.shape[:2]
    H, weights = stack_modules(encoders)(F_seq.flatten(0, 1), pos.flatten(0, 1), need_weights)
    return H.unflatten(0, (K, B)), [None if w is None else w.unflatten(0, (K, B)) for w in weights]
