"""C2DSR (Cao, Cong, Sheng, Liu and Wang, "Contrastive cross-domain sequential recommendation",
CIKM 2022): the benchmark owner's model, in a faithful but compact form.

Its parts (section 3 of the paper), as built here:
1. Graph item embeddings. An item-item graph joins items that follow each other in a training
   sequence (the inter-sequence collaborative signal). A GCN propagates the learnable table E over
   the symmetrically normalised adjacency with self-loops, A^ = D^-1/2 (A + I) D^-1/2, and the item
   table is the mean of the layer outputs, T = mean(E, A^E, ..., A^^K E).
2. Three sequential attentive encoders (self-attention blocks as in SASRec) over the views
   S^X, S^Y and S^{X+Y}, all reading T: H^X, H^Y, H^{X+Y}.
3. Two sequential objectives. Single-domain: H^X at every X slot predicts the next X item over the
   X items (likewise Y). Cross-domain: at every slot of S^{X+Y} whose next item is in domain D,
   H^{X+Y} plus H^D at the latest D slot predicts it over the items of D (C2DSR's evaluation
   representation, so training and scoring use the same sum).
4. Contrastive cross-domain infomax. For the single-domain user representation h^X (H^X at its last
   X item) the positive is the cross-domain representation h^{X+Y} (last slot of H^{X+Y}); the
   negative is h~^{X+Y} of a corrupted mixed sequence in which every X item is replaced by a random
   X item. A bilinear discriminator D(h^X, h) = h^X W h + b is trained with binary cross-entropy
   (likewise for Y). L = L_cross + L_single^X + L_single^Y + LAMBDA_CL * L_infomax.
Scoring: an X-target line scores every item by (h^{X+Y} + h^X) . T_i (Y-target lines with h^Y).

Simplified against the paper (stated for the reproduction's decision list):
- one graph over all training transitions (mixed order) shared by the three views, rather than a
  graph per domain and a cross-domain graph with separate GNNs; binary edges; K = GNN_LAYERS;
- the sequence encoders are the SASRec encoder of ``sasrec.py`` (depth/heads from the config);
- softmax cross-entropy over every slot with a target (the trainer's convention) rather than the
  last positions only; the infomax corruption replaces items uniformly within their domain;
- LAMBDA_CL is a module constant (the paper tunes it), not a config key.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hafvt.config import Config
from hafvt.data.batches import VIEW_INDEX
from hafvt.data.c2dsr import Scenario
from hafvt.models.baselines.base import target_rows
from hafvt.models.attention import Encoder
from hafvt.models.baselines.transitions import transition_pairs

GNN_LAYERS = 1  # propagation depth of the item graph
LAMBDA_CL = 0.1  # weight of the infomax term (choice: small, as an auxiliary loss)


def normalised_adjacency(a: np.ndarray, b: np.ndarray, n: int) -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 as a sparse (n, n) tensor, A the symmetric binary transition graph."""
    loops = np.arange(n)
    rows = np.concatenate([a, b, loops])
    cols = np.concatenate([b, a, loops])
    key = np.unique(rows * n + cols)  # binary edges
    rows, cols = key // n, key % n
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    w = 1.0 / np.sqrt(deg[rows] * deg[cols])
    return torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(w).float(), (n, n),
                                   check_invariants=True).coalesce()


class C2DSR(nn.Module):
    views = ("x", "y", "xy")

    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__()
        self.cfg, self.n_x, self.n_items, self.d = cfg, scn.n_x, scn.n_items, cfg.hidden
        self.E = nn.Embedding(self.n_items, self.d)
        nn.init.normal_(self.E.weight, std=0.02)
        train = scn.split("train")
        a, b = transition_pairs(np.asarray(train.items, dtype=np.int64), np.asarray(train.offsets))
        self.register_buffer("A", normalised_adjacency(a, b, self.n_items), persistent=False)
        self.enc = nn.ModuleDict({v: Encoder(self.d, cfg) for v in self.views})
        self.D = nn.Bilinear(self.d, self.d, 1)
        self.register_buffer("in_y", torch.arange(self.n_items) >= self.n_x, persistent=False)

    # ------------------------------------------------------------------ pieces
    def item_table(self) -> torch.Tensor:
        """T = mean of the GCN layers over the item graph, plus a zero padding row: (n_items+1, d)."""
        with torch.autocast(self.E.weight.device.type, enabled=False):
            layers, x = [self.E.weight], self.E.weight
            for _ in range(GNN_LAYERS):
                x = torch.sparse.mm(self.A, x)
                layers.append(x)
            T = torch.stack(layers).mean(0)
        return torch.cat([T, T.new_zeros(1, self.d)])

    def encode(self, T: torch.Tensor, seq: torch.Tensor, pos: torch.Tensor, v: str) -> torch.Tensor:
        return self.enc[v](T[seq], pos)[0]

    def views_H(self, T: torch.Tensor, batch: dict) -> dict:
        return {v: self.encode(T, batch["seq"][:, i], batch["pos"][:, i], v) for v, i in VIEW_INDEX.items()}

    def latest(self, H: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """For every slot s, H at the latest real slot <= s (zero where there is none): (B, L, d)."""
        L = real.shape[1]
        idx = torch.where(real, torch.arange(L, device=real.device), -1).cummax(1).values
        out = H.gather(1, idx.clamp(min=0)[..., None].expand(-1, -1, H.shape[-1]))
        return out * (idx >= 0)[..., None]

    def domain_logits(self, h: torch.Tensor, T: torch.Tensor, target_in_y: torch.Tensor) -> torch.Tensor:
        """Scores over every item with the other domain's items masked out (per row)."""
        logits = (h @ T[: self.n_items].T).float()
        return logits.masked_fill(self.in_y[None, :] != target_in_y[:, None], float("-inf"))

    def corrupt(self, seq: torch.Tensor, domain_y: bool) -> torch.Tensor:
        """The mixed sequence with every item of one domain replaced by a random item of that domain."""
        lo, hi = (self.n_x, self.n_items) if domain_y else (0, self.n_x)
        hit = (seq >= lo) & (seq < hi)
        return torch.where(hit, torch.randint_like(seq, lo, hi), seq)

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict, counts: dict | None = None) -> torch.Tensor:
        T = self.item_table()
        H = self.views_H(T, batch)
        seq, tgt = batch["seq"], batch["tgt"]
        pad = self.n_items
        # cross-domain objective at every mixed slot with a target
        t_xy = tgt[:, 2].reshape(-1)
        rows = target_rows(tgt[:, 2], None if counts is None else counts["xy"])
        t_in_y = t_xy[rows] >= self.n_x
        side = {v: self.latest(H[v], seq[:, i] != pad).flatten(0, 1)[rows] for v, i in (("x", 0), ("y", 1))}
        h = H["xy"].flatten(0, 1)[rows] + torch.where(t_in_y[:, None], side["y"], side["x"])
        loss = F.cross_entropy(self.domain_logits(h, T, t_in_y), t_xy[rows])
        # single-domain objectives
        for v, i in (("x", 0), ("y", 1)):
            t_v = tgt[:, i].reshape(-1)
            rows_v = target_rows(tgt[:, i], None if counts is None else counts[v])
            h_v = H[v].flatten(0, 1)[rows_v]
            loss = loss + F.cross_entropy(self.domain_logits(h_v, T, torch.full_like(t_v[rows_v], v == "y", dtype=torch.bool)), t_v[rows_v])
        return loss + LAMBDA_CL * self.infomax(T, H, batch)

    def infomax(self, T: torch.Tensor, H: dict, batch: dict) -> torch.Tensor:
        """Binary cross-entropy of the discriminator: (h^D, h^{X+Y}) real, (h^D, h~^{X+Y}) corrupted."""
        B = len(batch["seq"])
        ar = torch.arange(B, device=batch["seq"].device)
        h_xy = H["xy"][:, -1]
        total = 0.0
        for v, i in (("x", 0), ("y", 1)):
            last = batch["last"][:, i]
            has = (batch["seq"][ar, i, last] != self.n_items).float()
            h_v = H[v][ar, last]
            fake = self.encode(T, self.corrupt(batch["seq"][:, 2], v == "y"), batch["pos"][:, 2], "xy")[:, -1]
            pos_logit, neg_logit = self.D(h_v, h_xy).squeeze(-1), self.D(h_v, fake).squeeze(-1)
            bce = (F.binary_cross_entropy_with_logits(pos_logit.float(), torch.ones_like(has), reduction="none")
                   + F.binary_cross_entropy_with_logits(neg_logit.float(), torch.zeros_like(has), reduction="none"))
            total = total + (bce * has).sum() / has.sum().clamp(min=1.0)
        return total

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def scores(self, batch: dict) -> torch.Tensor:
        T = self.item_table()
        H = self.views_H(T, batch)
        ar = torch.arange(len(batch["seq"]), device=batch["seq"].device)
        side = {}
        for v, i in (("x", 0), ("y", 1)):
            last = batch["last"][:, i]
            side[v] = H[v][ar, last] * (batch["seq"][ar, i, last] != self.n_items)[:, None]
        h = H["xy"][:, -1] + torch.where(batch["domain"][:, None] == 1, side["y"], side["x"])
        return (h @ T[: self.n_items].T).float()
