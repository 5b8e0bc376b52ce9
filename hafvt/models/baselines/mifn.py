"""MIFN (Ma, Ren, Chen, Ren, Zhao, Liu, Ma and de Rijke, "Mixed information flow for cross-domain
sequential recommendations", ACM TKDD 16(4), 2022; arXiv 2012.00485), in the shared harness.

MIFN reads a mixed sequence of items of two domains and joins two flows of information: a
*behavioural* flow (GRU encoders per domain and a behaviour transfer unit, BTU, that carries one
domain's sequence into the other's prediction) and a *knowledge* flow (a knowledge transfer unit,
KTU, over a subgraph of a knowledge graph around the sequence's items). A mixed recommendation
decoder per domain has two decoders, a sequence decoder over all items of the domain and a graph
decoder that points at the domain's nodes of the subgraph, and a *switch* that mixes them. Only
the paper's abstract was at hand here, not its full text: the equations below follow the authors'
public TensorFlow code (github.com/mamuyang/MIFN, ``MIFN.py`` and ``extract_kg.py``), read for
understanding (no code copied); where that code and the paper's text differ, this file follows the code.

As built here, for the mixed history i_1..i_t (view S^{X+Y}) and a next item in domain D (Dbar the
other domain); every recurrence steps only on its own domain's slots and carries its state across
the other slots, so at any slot it holds the state after the latest item of its domain:
1. Sequence encoders: h^X_t = GRU_X(E[i_t], h^X_{t-1}) over S^X; likewise h^Y over S^Y.
2. BTU, for X (likewise Y): a filter cell reads h^X_t and h^Y_{<t}, the Y encoder state after the
   latest Y item before t,
       f_t = sigma(W_f [h^X_t; h^Y_{<t}; s_{t-1}] + b_f),  s~_t = tanh(W_s [h^X_t; s_{t-1}] + b_s),
       s_t = f_t * s~_t + (1 - f_t) * s_{t-1},
   and a transfer GRU over the filtered states gives tau^X_t = GRU(s_t, tau^X_{t-1}), X's flow
   into Y's prediction.
3. Knowledge graph (substitute, see below): N(i), the K = ``cfg.mifn_neighbors`` items of either
   domain that co-occur most often with i in the training lines. Node states propagate the item table E over it once,
   with separate weights for in-domain and cross-domain neighbours (MIFN's two weight sets):
       k_i = E_i + ReLU(sum_{j in N(i), same domain} W_in E_j / |N(i)| + sum_{j in N(i), other} W_cr E_j / |N(i)|).
   The subgraph of a line is {i_s} + N(i_s) over its history; a node is visible at slot t once an
   item at a slot <= t has brought it in (so no node comes from the future of the slot).
4. KTU at slot t, with h_t, tau_t the encoder and transfer states of i_t's domain: an in-domain
   read-out a^in_t = sum_n alpha_n k_n over visible nodes of i_t's domain, alpha = softmax_n((W_a h_t) . k_n),
   a cross-domain read-out a^cr_t likewise over the other domain's nodes queried by W_c tau_t, and
   g_t = sigma(W_g [h_t; tau_t] + b_g),  kappa_t = g_t * a^in_t + (1 - g_t) * a^cr_t.
5. Mixed recommendation decoder for domain D at slot t, z = [h^D_t; tau^Dbar_t]:
       sequence decoder  p_S(i) = softmax over the items of D of (W_o z + b_o)_i;
       graph decoder     p_G(i) = softmax over the visible nodes of D of (W_q^D [h^D_t; kappa_t]) . k_i
                         (0 for an item that is not a visible node);
       switch            P_G = sigma(w^D . [z; kappa_t] + b^D),  P(i) = P_G p_G(i) + (1 - P_G) p_S(i).
6. Loss at every slot of S^{X+Y} with a target (the trainer's convention), routed to the target's
   domain decoder: -log P(target) plus the switch loss of the authors' code,
   -[target not among the visible nodes of D] * log(1 - P_G) (the switch must pick the sequence
   decoder when the graph decoder cannot point at the target), with weight SWITCH_WEIGHT.
Scoring: an X-target line scores every X item by log P(i) from the X decoder at the last slot
(Y-target lines with the Y decoder), in float64 and shifted by a per-line constant so that an item
outside the subgraph scores its logit (30k-60k float32 logits, or log-probabilities near -11, tie
distinct items by rounding); the other domain's columns are -inf (the harness masks them).

The switch is MIFN's: it chooses between the knowledge (graph) decoder and the sequence decoder
inside one domain. MIFN has no gate over the next item's domain: it has one decoder per domain and
predicts a next item in each. Under the C2DSR protocol the target's domain is given to the scorer,
so a domain gate would multiply all candidates of a line by one constant and change no rank.

Simplified against the paper (stated for the reproduction's decision list):
- No knowledge graph: the C2DSR files carry item ids only, while MIFN's graph links Amazon items by
  also-bought, also-viewed, bought-after-viewing, bought-together and category edges (plus the
  sequence's own transitions). The substitute is one relation built from the training split only:
  co-occurrence in the same training line (every pair of positions counts), each item keeping its
  K most frequent co-occurring items (ties: the more popular neighbour, then the lower id). This is
  closest to "also bought". It is built from whole training lines, so while training on a line the
  graph already holds that line's own later items, the slot's target included (also-bought lists
  likewise include their users' purchases); valid and test lines never enter it. K = ``cfg.mifn_neighbors`` (10; MIFN samples 200 nodes per line from
  a multi-hop subgraph; here a line's subgraph has at most L (K + 1) = 165 nodes for L = 15).
- KTU: MIFN updates the subgraph's node states per line with sequence-conditioned soft masks, five
  relation-specific GCN weights and a GRU step; here node states are one line-independent propagation
  over the whole co-occurrence graph, and the sequence conditions the KTU through per-slot attention
  read-outs and a vector gate (computed at every slot, causally). Bilinear attention scores replace
  the code's additive ones (tanh), to keep the per-slot node scores a batched product.
- The graph decoder's query is [h^D; kappa] (the code attends with h^D over KTU-updated node states);
  the switch reads kappa where the code sums the node states of D.
- One target per slot (the next mixed item, every slot with a target) instead of MIFN's pair of
  targets per sequence (the next item of A and of B); the mixture's likelihood in log space.
- Dropout ``cfg.dropout`` on item embeddings and decoder inputs (the code: 0.2 on the GRU cells);
  no gradient clipping (the code clips at 5); Adam, lr, L2 and batch size from the config like every
  row; hidden size ``cfg.hidden`` for embeddings and states (the code: 256 for both); one GRU layer.
- SWITCH_WEIGHT = 1 (the code adds the switch loss unweighted) is a module constant, not a config key.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hafvt.config import Config
from hafvt.data.batches import VIEW_INDEX, target_rows
from hafvt.data.c2dsr import Scenario
from hafvt.models.baselines.base import ItemTableModel

SWITCH_WEIGHT = 1.0  # weight of the switch loss (the authors' code: 1)
NEG = -1e9  # a finite "minus infinity" for masked log-probabilities (keeps gradients finite)


# --------------------------------------------------------------------------- knowledge-graph substitute


def cooccurrence_neighbours(items: np.ndarray, offsets: np.ndarray, n_items: int, k: int) -> np.ndarray:
    """(n_items + 1, k): each item's k most frequent co-occurring items in the same line (padding = n_items).

    Counts every ordered pair of distinct items at two positions of one line; ties go to the more
    popular neighbour, then the lower id. The last row (padding) has no neighbours.
    """
    items = np.asarray(items, dtype=np.int64)
    lengths = np.diff(offsets)
    line = np.repeat(np.arange(len(lengths)), lengths)
    a_parts, b_parts = [], []
    for dist in range(1, int(lengths.max(initial=1))):
        same = line[dist:] == line[:-dist]
        a, b = items[:-dist][same], items[dist:][same]
        a_parts += [a, b]
        b_parts += [b, a]
    nbr = np.full((n_items + 1, k), n_items, dtype=np.int64)
    if not a_parts:
        return nbr
    a, b = np.concatenate(a_parts), np.concatenate(b_parts)
    keep = a != b
    pairs, w = np.unique(a[keep] * n_items + b[keep], return_counts=True)
    a, b = pairs // n_items, pairs % n_items
    pop = np.bincount(items, minlength=n_items)
    order = np.lexsort((b, -pop[b], -w, a))  # by a, then count, popularity and id of b
    a, b = a[order], b[order]
    rank = np.arange(len(a)) - np.searchsorted(a, a, side="left")
    top = rank < k
    nbr[a[top], rank[top]] = b[top]
    return nbr


def neighbour_means(nbr: np.ndarray, n_x: int, n_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse (n_items, n_items) A_in, A_cr: 1/|N(i)| on the in-domain / cross-domain neighbours of i."""
    rows, slot = np.nonzero(nbr[:n_items] != n_items)
    cols = nbr[rows, slot]
    deg = np.bincount(rows, minlength=n_items).astype(np.float32)
    w = 1.0 / deg[rows]
    same = (rows >= n_x) == (cols >= n_x)

    def sparse(m):
        idx = torch.from_numpy(np.stack([rows[m], cols[m]]))
        return torch.sparse_coo_tensor(idx, torch.from_numpy(w[m]), (n_items, n_items), check_invariants=True).coalesce()

    return sparse(same), sparse(~same)


# --------------------------------------------------------------------------- recurrent pieces


class MaskedGRU(nn.Module):
    """A GRU that steps on the real slots of a view and carries its state across the others."""

    def __init__(self, d_in: int, d: int):
        super().__init__()
        self.cell = nn.GRUCell(d_in, d)

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)
        out = []
        for t in range(x.shape[1]):
            h = torch.where(real[:, t, None], self.cell(x[:, t], h).to(h.dtype), h)
            out.append(h)
        return torch.stack(out, 1)


class FilterCell(nn.Module):
    """BTU filter: f = sigma(W_f [h; h_other; s]), s~ = tanh(W_s [h; s]), s' = f s~ + (1 - f) s (real slots)."""

    def __init__(self, d: int):
        super().__init__()
        self.W_f, self.W_s = nn.Linear(3 * d, d), nn.Linear(2 * d, d)

    def forward(self, h: torch.Tensor, h_other: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        s = h.new_zeros(h.shape[0], h.shape[-1])
        out = []
        for t in range(h.shape[1]):
            f = torch.sigmoid(self.W_f(torch.cat([h[:, t], h_other[:, t], s], -1)))
            cand = torch.tanh(self.W_s(torch.cat([h[:, t], s], -1)))
            s = torch.where(real[:, t, None], (f * cand + (1 - f) * s).to(s.dtype), s)
            out.append(s)
        return torch.stack(out, 1)


def masked_log_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax over the masked-in entries of the last axis (float32); NEG elsewhere and on empty rows."""
    s = scores.float().masked_fill(~mask, NEG)
    return (s - s.logsumexp(-1, keepdim=True)).masked_fill(~mask, NEG)


# --------------------------------------------------------------------------- the model


class MIFN(ItemTableModel):
    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__(cfg, scn)
        d = self.d
        self.drop = nn.Dropout(cfg.dropout)
        # behavioural flow: encoders, BTU filter and transfer per domain
        self.enc = nn.ModuleDict({v: MaskedGRU(d, d) for v in ("x", "y")})
        self.filter = nn.ModuleDict({v: FilterCell(d) for v in ("x", "y")})
        self.transfer = nn.ModuleDict({v: MaskedGRU(d, d) for v in ("x", "y")})
        # knowledge flow: the co-occurrence graph of the training lines
        train = scn.split("train")
        nbr = cooccurrence_neighbours(train.items, np.asarray(train.offsets), self.n_items, cfg.mifn_neighbors)
        A_in, A_cr = neighbour_means(nbr, self.n_x, self.n_items)
        self.register_buffer("nbr", torch.from_numpy(nbr), persistent=False)
        self.register_buffer("A_in", A_in, persistent=False)
        self.register_buffer("A_cr", A_cr, persistent=False)
        self.W_in, self.W_cr = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.W_a, self.W_c = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.W_g = nn.Linear(2 * d, d)
        # mixed recommendation decoder: sequence decoder (rows of D's items = D's decoder), graph query, switch
        self.out = nn.Linear(2 * d, self.n_items)
        self.query = nn.ModuleDict({v: nn.Linear(2 * d, d) for v in ("x", "y")})
        self.switch = nn.ModuleDict({v: nn.Linear(3 * d, 1) for v in ("x", "y")})
        self.register_buffer("in_y", torch.arange(self.n_items) >= self.n_x, persistent=False)

    # ------------------------------------------------------------------ flows
    def behaviour(self, seq: torch.Tensor) -> tuple[dict, dict]:
        """Encoder states h^D and transfer states tau^D per slot, (B, L, d) each, carried across other slots."""
        real = {v: seq[:, i] != self.n_items for v, i in (("x", 0), ("y", 1))}
        H = {v: self.enc[v](self.drop(self.E(seq[:, i])), real[v]) for v, i in (("x", 0), ("y", 1))}
        other = {"x": "y", "y": "x"}
        T = {v: self.transfer[v](self.filter[v](H[v], H[other[v]], real[v]), real[v]) for v in ("x", "y")}
        return H, T

    def knowledge_table(self) -> torch.Tensor:
        """k_i = E_i + ReLU(A_in E W_in + A_cr E W_cr), plus a zero padding row: (n_items + 1, d)."""
        with torch.autocast(self.E.weight.device.type, enabled=False):
            E = self.E.weight[: self.n_items]
            msg = torch.sparse.mm(self.A_in, self.W_in(E)) + torch.sparse.mm(self.A_cr, self.W_cr(E))
            K = E + F.relu(msg)
        return torch.cat([K, K.new_zeros(1, self.d)])

    def subgraph(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nodes of each line's subgraph, (B, N) with N = L (K + 1), and when each becomes visible: (B, L, N)."""
        B, L = hist.shape
        cand = torch.cat([hist[..., None], self.nbr[hist]], -1).reshape(B, -1)  # (B, L (K+1))
        intro = torch.arange(L, device=hist.device).repeat_interleave(self.nbr.shape[1] + 1).expand(B, -1)
        key, _ = (cand * L + intro).sort(-1)  # equal nodes side by side, earliest slot first
        nodes, intro = key // L, key % L
        first = torch.ones_like(nodes, dtype=torch.bool)
        first[:, 1:] = nodes[:, 1:] != nodes[:, :-1]
        valid = first & (nodes != self.n_items)
        visible = valid[:, None, :] & (intro[:, None, :] <= torch.arange(L, device=hist.device)[None, :, None])
        return nodes, visible

    @staticmethod
    def attend(q: torch.Tensor, Kn: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """sum_n softmax_n(q . k_n) k_n over the masked-in nodes (0 where none): (B, L, d)."""
        w = masked_log_softmax(torch.einsum("bld,bnd->bln", q, Kn), mask).exp() * mask
        return torch.einsum("bln,bnd->bld", w.to(Kn.dtype), Kn)

    def decode(self, batch: dict, dy: torch.Tensor, last: bool = False) -> dict:
        """Per slot (the last only if ``last``), the pieces of domain D's decoder (D = Y where ``dy``, (B, L) bool)."""
        seq = batch["seq"]
        H, T = self.behaviour(seq)
        hist = seq[:, VIEW_INDEX["xy"]]
        Ktab = self.knowledge_table()
        nodes, visible = self.subgraph(hist)
        if last:
            H, T = {v: h[:, -1:] for v, h in H.items()}, {v: t[:, -1:] for v, t in T.items()}
            hist, visible, dy = hist[:, -1:], visible[:, -1:], dy[:, -1:]
        Kn = Ktab[nodes]  # (B, N, d)
        node_y = (nodes >= self.n_x)[:, None, :]
        # KTU, from the domain of the item at each slot
        iy = (hist >= self.n_x)[..., None]
        h, tau = torch.where(iy, H["y"], H["x"]), torch.where(iy, T["y"], T["x"])
        same = node_y == iy
        a_in = self.attend(self.W_a(h), Kn, visible & same)
        a_cr = self.attend(self.W_c(tau), Kn, visible & ~same)
        g = torch.sigmoid(self.W_g(torch.cat([h, tau], -1)))
        kappa = g * a_in + (1 - g) * a_cr
        # decoder of the target's domain D: z = [h^D; tau^Dbar]
        dy3 = dy[..., None]
        hD, tO = torch.where(dy3, H["y"], H["x"]), torch.where(dy3, T["x"], T["y"])
        z = torch.cat([hD, tO], -1)
        zk = torch.cat([z, kappa], -1)
        switch = torch.where(dy, self.switch["y"](zk)[..., 0], self.switch["x"](zk)[..., 0]).float()
        hk = torch.cat([hD, kappa], -1)
        q = torch.where(dy3, self.query["y"](hk), self.query["x"](hk))
        mask = visible & (node_y == dy3)
        log_pG = masked_log_softmax(torch.einsum("bld,bnd->bln", q, Kn), mask)  # over D's visible nodes
        return {"z": z, "switch": switch, "log_pG": log_pG, "mask": mask, "nodes": nodes}

    def seq_logits(self, z: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """Sequence decoder's logits W_o z + b_o over all items (p_S is their softmax over the items of D)."""
        W, b = self.out.weight.to(dtype), self.out.bias.to(dtype)
        return F.linear(self.drop(z).to(dtype), W, b).to(dtype)  # float32 after bf16 autocast; float64 is not autocast

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict, counts: dict | None = None) -> torch.Tensor:
        tgt = batch["tgt"][:, VIEW_INDEX["xy"]]  # (B, L), -1 where none
        dy = tgt >= self.n_x
        out = self.decode(batch, dy)
        rows = target_rows(tgt, None if counts is None else counts["xy"])
        t = tgt.reshape(-1)[rows]
        logits = self.seq_logits(out["z"].flatten(0, 1)[rows])
        lse = torch.where(t >= self.n_x, logits[:, self.n_x :].logsumexp(-1), logits[:, : self.n_x].logsumexp(-1))
        log_pS = logits.gather(1, t[:, None])[:, 0] - lse  # log softmax over the items of the target's domain
        # graph decoder's probability of the target: its node, if visible in D's part of the subgraph
        hit = (out["nodes"][:, None, :] == tgt[..., None]) & out["mask"]  # (B, L, N), at most one per slot
        hit_r = hit.flatten(0, 1)[rows]
        log_pG = out["log_pG"].flatten(0, 1)[rows].masked_fill(~hit_r, NEG).logsumexp(-1)
        s = out["switch"].flatten()[rows]
        log_P = torch.logaddexp(F.logsigmoid(s) + log_pG, F.logsigmoid(-s) + log_pS)
        # switch loss: the sequence decoder must take over when the graph cannot point at the target
        switch_loss = (-F.logsigmoid(-s) * (~hit_r.any(-1))).mean()
        return -log_P.mean() + SWITCH_WEIGHT * switch_loss

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def scores(self, batch: dict) -> torch.Tensor:
        in_y = batch["domain"] == 1
        out = self.decode(batch, in_y[:, None], last=True)
        # float64 logits: 30k-60k float32 logits of an untrained model collide by rounding and tie distinct items
        logits = self.seq_logits(out["z"][:, -1], torch.float64)
        logits.masked_fill_(self.in_y[None, :] != in_y[:, None], float("-inf"))
        # log P(i) - log(1 - P_G) + logsumexp_D(logits): the same order within the line, with an item outside the
        # subgraph at its logit (a log-softmax near -11 would lose the logits' low bits)
        shift = out["switch"][:, -1, None] + logits.logsumexp(-1, keepdim=True)
        mask = out["mask"][:, -1]  # D's visible nodes (unique per line)
        idx = out["nodes"].masked_fill(~mask, 0)
        base = logits.gather(1, idx)
        delta = torch.where(mask, torch.logaddexp(shift + out["log_pG"][:, -1], base) - base, 0.0)
        return logits.scatter_add_(1, idx, delta)  # adds 0 wherever the node is not one of D's visible nodes
