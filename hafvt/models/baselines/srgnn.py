"""SR-GNN (Wu, Tang, Zhu, Wang, Xie and Tan, "Session-based recommendation with graph neural
networks", AAAI 2019), on the merged sequence S^{X+Y}.

Section "Learning item embeddings on session graphs": every session s = [v_1..v_n] becomes a
directed graph with an edge v_{i-1} -> v_i for every transition; A_s = [A_out, A_in], each
normalised by the node's out/in degree. One gated-GNN step (eq. 1-5):
    a_i = [A_out,i: (v W_out) + b_out ; A_in,i: (v W_in) + b_in]
    z = s(W_z a + U_z v), r = s(W_r a + U_r v), v~ = tanh(W_o a + U_o (r * v)), v' = (1-z) v + z v~
(a GRU cell with input a). Session embedding (eq. 6-7): s_l = v_n (last item),
    alpha_i = q^T s(W_1 v_n + W_2 v_i + c),  s_g = sum_i alpha_i v_i,  s_h = W_3 [s_l ; s_g];
scores z_i = s_h^T v_i over every item with a softmax and cross-entropy (eq. 8-9).

As in the paper every prefix of a training sequence is a session whose next item is the label;
here a prefix ends at each slot with a target. Nodes are the sequence's slots; a repeated item's
slots all carry the item's state, and only its first slot receives messages, so the graph equals
the paper's one-node-per-distinct-item graph. The whole computation is batched tensors (no
per-session Python), and s_g sums over the session's clicks (repeats included).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from hafvt.config import Config
from hafvt.data.c2dsr import Scenario
from hafvt.models.baselines.base import XY, NextItemModel, cross_entropy, target_rows

GNN_STEPS = 1  # the paper's propagation steps (one step in its experiments)


def session_graph(seq: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Degree-normalised A_out, A_in (N, L, L) over slots, one node per distinct item."""
    N, L = seq.shape
    same = (seq[:, :, None] == seq[:, None, :]) & real[:, :, None] & real[:, None, :]  # (N, L, L)
    step = real[:, :-1] & real[:, 1:]  # transition slot k -> k+1
    # M[i, j] = 1 if item(i) -> item(j) is a transition somewhere in the session
    src = (same[:, :, :-1] & step[:, None, :]).float()  # (N, L, L-1): item(i) == item(k)
    dst = same[:, 1:, :].float()  # (N, L-1, L): item(k+1) == item(j)
    M = (src @ dst).clamp(max=1.0)
    idx = torch.arange(L, device=seq.device)
    first = real & ~(same & (idx[None, :, None] > idx[None, None, :])).any(-1)  # no equal item earlier
    def norm(A):
        A = A * first[:, None, :].float()
        return A / A.sum(-1, keepdim=True).clamp(min=1.0)
    return norm(M), norm(M.transpose(1, 2))


class SRGNN(NextItemModel):
    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__(cfg, scn)
        d = self.d
        self.W_out, self.W_in = nn.Linear(d, d), nn.Linear(d, d)
        self.cell = nn.GRUCell(2 * d, d)
        self.W1, self.W2 = nn.Linear(d, d, bias=False), nn.Linear(d, d)  # W2's bias is c of eq. 6
        self.q = nn.Linear(d, 1, bias=False)
        self.W3 = nn.Linear(2 * d, d, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def session_embedding(self, seq: torch.Tensor) -> torch.Tensor:
        """s_h of eq. 7 for sessions (N, L) whose newest item is in the last slot."""
        real = seq != self.n_items
        A_out, A_in = session_graph(seq, real)
        v = self.drop(self.E(seq))
        N, L, d = v.shape
        for _ in range(GNN_STEPS):
            a = torch.cat([A_out @ self.W_out(v), A_in @ self.W_in(v)], -1)
            v = self.cell(a.reshape(N * L, 2 * d), v.reshape(N * L, d)).view(N, L, d)
        s_l = v[:, -1]
        alpha = self.q(torch.sigmoid(self.W1(s_l)[:, None] + self.W2(v))) * real[..., None]
        s_g = (alpha * v).sum(1)
        return self.W3(torch.cat([s_l, s_g], -1))

    def prefixes(self, seq: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The session ending at each selected flattened slot (b, t): slots after t become padding,
        then rolled so that slot t is last (left padding kept)."""
        B, L = seq.shape
        b, t = rows // L, rows % L
        shift = (L - 1) - t  # roll right by this much
        src = torch.arange(L, device=seq.device)[None, :] - shift[:, None]  # (n, L)
        out = seq[b].gather(1, src.clamp(min=0))
        return out.masked_fill(src < 0, self.n_items)

    def loss(self, batch: dict, counts: dict | None = None, sum_scale: dict | None = None) -> torch.Tensor:
        seq, tgt = batch["seq"][:, XY], batch["tgt"][:, XY]
        rows = target_rows(tgt, None if counts is None else counts["xy"])
        s_h = self.session_embedding(self.prefixes(seq, rows))
        return cross_entropy(self.item_logits(s_h).float(), tgt.reshape(-1)[rows], sum_scale)

    def hidden_states(self, batch: dict):
        return self.session_embedding(batch["seq"][:, XY])[:, None]  # the last slot only

    @torch.no_grad()
    def scores(self, batch: dict) -> torch.Tensor:
        return self.item_logits(self.session_embedding(batch["seq"][:, XY])).float()
