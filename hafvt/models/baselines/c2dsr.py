"""C2DSR (Cao, Cong, Sheng, Liu and Wang, "Contrastive cross-domain sequential recommendation",
CIKM 2022): the benchmark owner's model, built after the authors' public code (cjx96/C2DSR).

What is built (X and Y the two domains, d = ``hidden``):
1. Graph item embeddings. Three learnable item tables, E^{X+Y} (every item), E^X (X items) and E^Y
   (Y items), each with a padding row last. Each has its own directed item graph, built from the
   training lines only (never valid/test): an edge a -> b when b follows a in a line, in the mixed
   line for E^{X+Y} and in the line filtered to the domain for E^X and E^Y; binary (duplicates
   removed), no self-loops, row-normalised, A^ = D^-1 A. Each table has its own one-layer GCN, computed
   as in the authors' code: G = (E + A^ dropout(E) + b) / 2 (the mean of the input and one propagation
   step, dropout at the config's rate; the code's graph layer adds a bias and applies no weight matrix).
2. Sequential encoders. The input at a slot holding item i is (G_i + E_i) * sqrt(d) (the authors'
   code scales the sum), read from the table of the view: S^{X+Y} from E^{X+Y}, S^X from E^X, S^Y from
   E^Y. Three self-attention encoders (``n_blocks`` 2, dropout 0.2 in configs/c2dsr.yaml, the
   authors' defaults) give H^{X+Y}, H^X, H^Y, one state per slot.
3. Untied output layers: lin_X (d -> |X|), lin_Y (d -> |Y|) and lin_PAD (d -> 1), a PAD class that
   ends both softmaxes (|X| + 1 and |Y| + 1 classes; PAD is never a target, as in the code).
4. Objectives, on the last USED = 10 slots only (slots with a target):
   - shared CE X: at a mixed slot t whose next mixed item is in X, [lin_X(H^{X+Y}_t), lin_PAD(H^{X+Y}_t)]
     predicts it (the mixed representation alone, as the code's share_x_result);
   - specific CE X: at an X slot t with a next X item, [lin_X(H^{X+Y}_t + H^X_t), lin_PAD(H^X_t)]
     predicts it (the code's specific_x_result); likewise Y;
   - each CE is summed over its slots and divided by USED x the batch's lines with a target (the
     code's masked mean over every (line, slot) of the last 10);
   - cross-domain infomax X: h^X = the mean of H^X over the X slots with a target (a masked mean,
     padding excluded), h^{X+Y} = the mean of H^{X+Y} over the Y slots with a target, and h~^{X+Y}
     the same mean for the mixed line whose X items are replaced by random X items. A bilinear
     discriminator D_X(h, h^X) = h W h^X + b is trained with binary cross-entropy, (h^{X+Y}, h^X) real
     and (h~^{X+Y}, h^X) fake; infomax Y likewise with D_Y;
   - L = LAMBDA (CE_shared^X + CE_shared^Y + CE_specific^X + CE_specific^Y) + (1 - LAMBDA) (I^X + I^Y).
5. Scoring (the code's test_batch): the X items by lin_X(H^{X+Y}_last + H^X at the newest X slot),
   the Y items by lin_Y(H^{X+Y}_last + H^Y at the newest Y slot). This is ``specific()``, the function
   that gives the specific CE's representation: at an X slot the newest X slot is the slot itself.

Reading: the HAF-VT and IFCDSR papers (/work/shared/papers) do not describe C2DSR, so the shared and
specific terms follow the authors' code: the shared prediction reads H^{X+Y} alone, the specific one
H^{X+Y} + H^X; scoring uses the specific representation. On a line whose newest item is in Y, an X
target is scored by H^{X+Y} at that Y slot plus H^X at an earlier slot, a sum that the CE terms
never train at one slot (the shared term trains lin_X(H^{X+Y}) there); the authors' code does the same.

Remaining simplifications against the authors' code:
- the encoder is the harness's pre-LN SASRec block (``attention.Encoder``; the code: LayerNorm on
  the query only, residual from the normalised query), tables start at N(0, 0.02) (the code:
  PyTorch's N(0, 1)) and the GCN bias at zero; positions are as the harness builds them (1.. within
  each view, as the code's x_position);
- the infomax corruption is redrawn for every batch (the code draws it once per line), and a line
  enters I^X only when it has target slots in both domains (the code drops such lines from training);
- the views are the harness's: every history item stays in its view (the code's training loader
  removes the newest X item from the X-only input when the line's last item is in Y), the CE terms
  read the targets the trainer gives (``train_targets``), and optimiser, schedule and batches are the
  harness's (the code: Adam at lr 1e-3, batches of 256);
- graphs are binary (the code's de-duplication set is never filled, so its repeated edges add up).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hafvt.config import Config
from hafvt.data.batches import VIEW_INDEX
from hafvt.data.c2dsr import Scenario
from hafvt.models import lookup
from hafvt.models.attention import Encoder
from hafvt.models.baselines.base import item_table

LAMBDA = 0.7  # weight of the CE terms, 1 - LAMBDA of the infomax (the authors' code: --lambda 0.7)
USED = 10  # the CE terms read the last USED slots (the authors' trainer: used = 10)


# ---------------------------------------------------------------------------- graphs
def consecutive_graph(items: np.ndarray, line: np.ndarray, n: int) -> torch.Tensor:
    """D^-1 A over n items as a sparse (n, n) tensor: a -> b when b follows a in a line (``line`` = each
    item's line); binary, no self-loops, an item that is never followed keeps an empty row."""
    same = line[1:] == line[:-1]
    a, b = items[:-1][same], items[1:][same]
    key = np.unique(a[a != b] * n + b[a != b])
    rows, cols = key // n, key % n
    w = 1.0 / np.bincount(rows, minlength=n)[rows]
    return torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(w).float(), (n, n),
                                   check_invariants=True).coalesce()


def training_graphs(scn: Scenario) -> dict[str, torch.Tensor]:
    """The mixed graph over every item and one graph per domain (local ids), from the training lines."""
    train = scn.split("train")
    items = np.asarray(train.items, dtype=np.int64)
    line = np.repeat(np.arange(len(train)), np.diff(np.asarray(train.offsets)))
    y = items >= scn.n_x
    return {"xy": consecutive_graph(items, line, scn.n_items),
            "x": consecutive_graph(items[~y], line[~y], scn.n_x),
            "y": consecutive_graph(items[y] - scn.n_x, line[y], scn.n_y)}


class GCN(nn.Module):
    """One graph layer over a table, as the authors' code computes it: (E + A^ dropout(E) + b) / 2."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.b, self.dropout = nn.Parameter(torch.zeros(d)), dropout

    def forward(self, E: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        with torch.autocast(E.device.type, enabled=False):
            return (E + torch.sparse.mm(A, F.dropout(E, self.dropout, self.training)) + self.b) / 2


# ---------------------------------------------------------------------------- helpers
def latest(H: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """For every slot t, H at the newest real slot <= t (zero where there is none): (B, L, d)."""
    L = real.shape[1]
    idx = torch.where(real, torch.arange(L, device=real.device), -1).cummax(1).values
    out = H.gather(1, idx.clamp(min=0)[..., None].expand(-1, -1, H.shape[-1]))
    return out * (idx >= 0)[..., None]


def masked_mean(H: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of H (B, L, d) over the slots where ``mask`` (B, L) holds; zero for a line with none."""
    m = mask.to(H.dtype)[..., None]
    return (H * m).sum(1) / m.sum(1).clamp(min=1.0)


def bilinear(d: int) -> nn.Bilinear:
    """A discriminator D(h, h') = h W h' + b, Xavier-initialised with a zero bias (the authors' code)."""
    D = nn.Bilinear(d, d, 1)
    nn.init.xavier_uniform_(D.weight)
    nn.init.zeros_(D.bias)
    return D


class C2DSR(nn.Module):
    views = ("x", "y", "xy")

    def __init__(self, cfg: Config, scn: Scenario):
        super().__init__()
        self.cfg, self.n_x, self.n_y, self.n_items, self.d = cfg, scn.n_x, scn.n_y, scn.n_items, cfg.hidden
        sizes = {"xy": scn.n_items, "x": scn.n_x, "y": scn.n_y}
        self.E = nn.ModuleDict({v: item_table(n, self.d) for v, n in sizes.items()})  # padding row last
        self.gcn = nn.ModuleDict({v: GCN(self.d, cfg.dropout) for v in sizes})
        for v, A in training_graphs(scn).items():
            self.register_buffer(f"A_{v}", A, persistent=False)
        self.enc = nn.ModuleDict({v: Encoder(self.d, cfg) for v in self.views})
        self.lin_X, self.lin_Y = nn.Linear(self.d, scn.n_x), nn.Linear(self.d, scn.n_y)
        self.lin_PAD = nn.Linear(self.d, 1)
        self.D = nn.ModuleDict({"x": bilinear(self.d), "y": bilinear(self.d)})

    # ------------------------------------------------------------------ pieces
    def tables(self) -> dict[str, torch.Tensor]:
        """Per view, the encoder's input rows (G + E) * sqrt(d), padding row last: (n + 1, d)."""
        out = {}
        for v, emb in self.E.items():
            E = emb.weight
            G = self.gcn[v](E[:-1], getattr(self, f"A_{v}"))
            out[v] = (torch.cat([G, G.new_zeros(1, self.d)]) + E) * math.sqrt(self.d)
        return out

    def rows(self, seq: torch.Tensor, v: str) -> torch.Tensor:
        """Item ids of view v -> rows of its table (padding, id ``n_items``, -> the table's last row)."""
        if v == "x":
            return torch.where(seq == self.n_items, self.n_x, seq)
        return seq - self.n_x if v == "y" else seq

    def encode(self, T: dict, seq: torch.Tensor, pos: torch.Tensor, v: str) -> torch.Tensor:
        return self.enc[v](lookup.rows(T[v], self.rows(seq, v)), pos)[0]

    def hidden(self, T: dict, batch: dict) -> dict[str, torch.Tensor]:
        """H^X, H^Y, H^{X+Y}: (B, L, d) each."""
        return {v: self.encode(T, batch["seq"][:, i], batch["pos"][:, i], v) for v, i in VIEW_INDEX.items()}

    def specific(self, H: dict, batch: dict, v: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per slot t, the domain-v prediction's input H^{X+Y}_t + H^v at the newest v slot <= t, and that
        H^v (the PAD logit's input): (B, L, d) each. Training's specific CE and scoring both read it."""
        side = latest(H[v], batch["pos"][:, VIEW_INDEX[v]] > 0)
        return H["xy"] + side, side

    def logits(self, v: str, h: torch.Tensor, h_pad: torch.Tensor) -> torch.Tensor:
        """[lin_X(h), lin_PAD(h_pad)] (or lin_Y): the domain's items, then the PAD class."""
        lin = self.lin_X if v == "x" else self.lin_Y
        return torch.cat([lin(h), self.lin_PAD(h_pad)], -1).float()

    def corrupt(self, seq: torch.Tensor, v: str) -> torch.Tensor:
        """The mixed line with every item of domain v replaced by a uniformly drawn item of v."""
        lo, hi = (0, self.n_x) if v == "x" else (self.n_x, self.n_items)
        hit = (seq >= lo) & (seq < hi)
        return torch.where(hit, torch.randint_like(seq, lo, hi), seq)

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict, counts: dict | None = None) -> torch.Tensor:
        T = self.tables()
        H = self.hidden(T, batch)
        tgt = batch["tgt"][:, :, -USED:]
        t_xy, h_xy = tgt[:, VIEW_INDEX["xy"]], H["xy"][:, -USED:]
        ce = 0.0
        for v, lo, n in (("x", 0, self.n_x), ("y", self.n_x, self.n_y)):
            # shared: the mixed representation at slots whose next mixed item is in v
            hit = (t_xy >= lo) & (t_xy < lo + n)
            ce = ce + F.cross_entropy(self.logits(v, h_xy[hit], h_xy[hit]), t_xy[hit] - lo, reduction="sum")
            # specific: mixed + v-only representation at v slots with a next v item
            t_v = tgt[:, VIEW_INDEX[v]]
            h, h_pad = (x[:, -USED:][t_v >= 0] for x in self.specific(H, batch, v))
            ce = ce + F.cross_entropy(self.logits(v, h, h_pad), t_v[t_v >= 0] - lo, reduction="sum")
        lines = (batch["tgt"][:, VIEW_INDEX["xy"]] >= 0).any(1).sum().clamp(min=1)
        return LAMBDA * ce / (USED * lines) + (1 - LAMBDA) * self.infomax(T, H, batch)

    def infomax(self, T: dict, H: dict, batch: dict) -> torch.Tensor:
        """I^X + I^Y: binary cross-entropy of D_X on (h^{X+Y}, h^X) real and (h~^{X+Y}, h^X) fake, and of D_Y."""
        seq, pos = batch["seq"][:, VIEW_INDEX["xy"]], batch["pos"][:, VIEW_INDEX["xy"]]
        mask = {v: batch["tgt"][:, VIEW_INDEX[v]] >= 0 for v in ("x", "y")}  # v slots with a target
        total = 0.0
        for v, o in (("x", "y"), ("y", "x")):
            h_v = masked_mean(H[v], mask[v])
            real = masked_mean(H["xy"], mask[o])  # the mixed states at the other domain's slots
            fake = masked_mean(self.encode(T, self.corrupt(seq, v), pos, "xy"), mask[o])
            keep = (mask[v].any(1) & mask[o].any(1)).float()
            s_real, s_fake = self.D[v](real, h_v).squeeze(-1).float(), self.D[v](fake, h_v).squeeze(-1).float()
            bce = (F.binary_cross_entropy_with_logits(s_real, torch.ones_like(s_real), reduction="none")
                   + F.binary_cross_entropy_with_logits(s_fake, torch.zeros_like(s_fake), reduction="none"))
            total = total + (bce * keep).sum() / keep.sum().clamp(min=1.0)
        return total

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def scores(self, batch: dict) -> torch.Tensor:
        """X items by lin_X(H^{X+Y}_last + H^X at the newest X slot), Y items by lin_Y likewise: (B, |X|+|Y|)."""
        H = self.hidden(self.tables(), batch)
        h = {v: self.specific(H, batch, v)[0][:, -1] for v in ("x", "y")}
        return torch.cat([self.lin_X(h["x"]), self.lin_Y(h["y"])], -1).float()
