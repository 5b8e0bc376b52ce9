"""PSJNet (Sun, Ma, Ren, Lin, Chen, Ren, Ma and de Rijke, "Parallel split-join networks for shared
account cross-domain sequential recommendations", IEEE TKDE 2021/2022; arXiv 1910.02448): the
PSJNet-II variant ("split-and-join"), in a compact form.

PSJNet was built for shared accounts: one account's mixed sequence holds the behaviour of several
users ("roles"). Each domain's sequence representation is split into K role-specific parts (split
unit), the parts useful to the other domain are carried over, and they are joined into a
cross-domain representation (join unit); two recurrent encoders, one per domain, run in parallel
and both domains are recommended for at every step. The C2DSR files have one user per line and no
role labels: the K roles here are latent (learned role embeddings r_1..r_K, the paper's K, config
key ``psjnet_k``), as in the paper, where the roles are never observed either.

Its parts, as built here (D is the domain recommended for, D' the other one; slots are those of
the aligned views S^X and S^Y, so a slot is a point in the mixed time line):
1. Parallel sequence encoders: one GRU per domain over that domain's own items,
       h^D_s = GRU_D(e_{D_s}, h^D_{s-1}) if slot s holds a D item, else h^D_s = h^D_{s-1};  h^D_0 = 0,
   so h^D_s is D's state after its latest item at or before s (the other domain's state at the same
   slot is what the paper's parallel encoders share "at each timestamp").
2. Split unit (D' -> D), at every slot j holding a D' item, for every role k = 1..K:
       f^k_j = sigmoid(W_f [h^{D'}_j ; h^D_j] + V_f r_k + b_f)      (role gate, conditioned on both domains)
       c^k_j = tanh(W_c h^{D'}_j + V_c r_k + b_c)                   (role-specific candidate)
       s^k_j = f^k_j * c^k_j                                         (role k's part of D', filtered for D)
3. Join unit (PSJNet-II: the parts of all timestamps and all roles are joined), for a
   recommendation in D made at slot i:
       a_{jk} = softmax over (j <= c(i), k) of (W_q h^D_i)^T (W_k s^k_j) / sqrt(d)
       h^{D'->D}_i = sum_{j,k} a_{jk} s^k_j                          (0 while D' has no item yet)
   c(i) is the last slot before D's next item: the recommendation sees every D' item that came
   before the item it predicts (at test, the whole history).
4. Hybrid recommendation decoder: z^D_i = W_o^D Dropout([h^D_i ; h^{D'->D}_i]) + b_o^D and
       P(d | S) = softmax over the items d of D of z^D_i . e_d.
5. Loss (both domains in parallel): L = L_X + L_Y, L_D the mean of -log P(next D item) over every
   slot of S^D that has a next D item (the X-only and Y-only views' targets).
Scoring: X items by z^X and Y items by z^Y at the last slot (the harness keeps the target's domain).

Simplified against the paper (stated for the reproduction's decision list):
- The paper's full text could not be read offline here (only its abstract and the authors' released
  pi-Net code, which is PSJNet-I); the split gate and candidate follow pi-Net's filter cell (a gate
  over both domains' states plus a role embedding), without its recurrence over time, since
  PSJNet-II joins afterwards; the join is an attention over all (timestamp, role) parts queried by
  the recommended domain's state, as the abstract describes it. The paper's exact join (its
  attention form, any GRU after it) may differ. PSJNet-I (join by a GRU at each step) is not built.
- No shared accounts: the K roles are latent sub-profiles of one user; K = ``psjnet_k`` = 4
  (pi-Net's code default; the paper tunes K per data set).
- One item table over X and Y (each domain reads only its own rows), and the decoder's output
  layer is tied to it (the paper has a separate dense output layer per domain); dot-product
  attention (one head) with a 1/sqrt(d) scale; dropout ``cfg.dropout`` on the item embeddings and on
  the decoder input; hidden size ``cfg.hidden`` for embeddings, GRU states, roles and parts.
- Softmax cross-entropy over the domain's items at every slot of S^X and S^Y with a target (the
  trainer's convention); the GRU steps only on real items, so left padding never enters a state.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hafvt.config import Config
from hafvt.data.batches import VIEW_INDEX, target_rows
from hafvt.data.c2dsr import Scenario
from hafvt.models.baselines.base import ItemTableModel

DOMAINS = ("x", "y")
OTHER = {"x": "y", "y": "x"}


def next_cutoff(real: torch.Tensor) -> torch.Tensor:
    """(B, L) -> (B, L): for every slot i, the slot before the first real slot after i (L-1 if none)."""
    L = real.shape[1]
    slots = torch.arange(L, device=real.device)
    at = torch.where(real, slots, L)  # a real slot's index, L elsewhere
    after = torch.cat([at[:, 1:], at.new_full((len(at), 1), L)], 1)  # shifted: strictly after i
    return after.flip(1).cummin(1).values.flip(1) - 1


class Split(nn.Module):
    """Split unit D' -> D: K role-specific parts s^k_j of D''s state at every slot, (B, L, K, d)."""

    def __init__(self, d: int, K: int):
        super().__init__()
        self.r = nn.Parameter(torch.randn(K, d) * d ** -0.5)  # role embeddings r_1..r_K
        self.W_f, self.V_f = nn.Linear(2 * d, d), nn.Linear(d, d, bias=False)
        self.W_c, self.V_c = nn.Linear(d, d), nn.Linear(d, d, bias=False)

    def forward(self, h_src: torch.Tensor, h_tgt: torch.Tensor) -> torch.Tensor:
        f = torch.sigmoid(self.W_f(torch.cat([h_src, h_tgt], -1))[:, :, None] + self.V_f(self.r))
        c = torch.tanh(self.W_c(h_src)[:, :, None] + self.V_c(self.r))
        return f * c


class Join(nn.Module):
    """Join unit: attention of a query state over the parts of every allowed (slot, role), (B, L, d)."""

    def __init__(self, d: int):
        super().__init__()
        self.W_q, self.W_k = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)

    def forward(self, q: torch.Tensor, parts: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """q (B, Lq, d), parts (B, L, K, d), allowed (B, Lq, L) -> (B, Lq, d)."""
        B, L, K, d = parts.shape
        keys = parts.reshape(B, L * K, d)
        logits = (self.W_q(q) @ self.W_k(keys).transpose(1, 2)).float() / math.sqrt(d)  # (B, Lq, L*K)
        ok = allowed.repeat_interleave(K, dim=2)
        a = logits.masked_fill(~ok, -1e9).softmax(-1)  # finite even where nothing is allowed
        return (a.to(keys.dtype) @ keys) * allowed.any(-1, keepdim=True)  # no part yet: 0


class PSJNet(ItemTableModel):
    views = DOMAINS  # reads S^X and S^Y (aligned on the mixed time line)

    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__(cfg, scn)
        d, self.K = self.d, cfg.psjnet_k
        self.drop = nn.Dropout(cfg.dropout)
        self.enc = nn.ModuleDict({D: nn.GRUCell(d, d) for D in DOMAINS})  # parallel encoders GRU_X, GRU_Y
        self.split = nn.ModuleDict({D: Split(d, self.K) for D in DOMAINS})  # split["x"]: Y -> X
        self.join = nn.ModuleDict({D: Join(d) for D in DOMAINS})
        self.out = nn.ModuleDict({D: nn.Linear(2 * d, d) for D in DOMAINS})  # hybrid decoder W_o^D
        self.items = {"x": slice(0, self.n_x), "y": slice(self.n_x, self.n_items)}

    # ------------------------------------------------------------------ pieces
    def encode(self, D: str, seq: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """h^D_s for every slot: the GRU steps on D's items only and carries its state over the rest."""
        x = self.drop(self.E(seq))
        h = x.new_zeros(len(seq), self.d)
        out = []
        for s in range(seq.shape[1]):
            h = torch.where(real[:, s, None], self.enc[D](x[:, s], h), h)
            out.append(h)
        return torch.stack(out, 1)

    def hybrid(self, batch: dict) -> dict:
        """z^D_i for both domains at every slot, (B, L, d) each."""
        seq = batch["seq"]
        real = {D: seq[:, VIEW_INDEX[D]] != self.n_items for D in DOMAINS}
        h = {D: self.encode(D, seq[:, VIEW_INDEX[D]], real[D]) for D in DOMAINS}
        L = seq.shape[-1]
        z = {}
        for D in DOMAINS:
            src = OTHER[D]
            parts = self.split[D](h[src], h[D])  # (B, L, K, d): D' parts at every slot
            cut = next_cutoff(real[D])  # (B, L): last slot before D's next item
            allowed = real[src][:, None, :] & (torch.arange(L, device=seq.device)[None, None, :] <= cut[:, :, None])
            h_join = self.join[D](h[D], parts, allowed)
            z[D] = self.out[D](self.drop(torch.cat([h[D], h_join], -1)))
        return z

    def domain_logits(self, z: torch.Tensor, D: str) -> torch.Tensor:
        return (z @ self.E.weight[self.items[D]].to(z.dtype).T).float()

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict, counts: dict | None = None) -> torch.Tensor:
        z = self.hybrid(batch)
        total = z["x"].new_zeros((), dtype=torch.float32)
        for D in DOMAINS:
            tgt = batch["tgt"][:, VIEW_INDEX[D]]
            rows = target_rows(tgt, None if counts is None else counts[D])
            if len(rows):
                t = tgt.reshape(-1)[rows] - self.items[D].start
                total = total + F.cross_entropy(self.domain_logits(z[D].flatten(0, 1)[rows], D), t)
        return total

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def scores(self, batch: dict) -> torch.Tensor:
        z = self.hybrid(batch)
        return torch.cat([self.domain_logits(z[D][:, -1], D) for D in DOMAINS], 1)
