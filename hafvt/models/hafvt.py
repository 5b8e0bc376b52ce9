"""HAF-VT (Wu et al.), with IFCDSR as its id+image configuration. Equation numbers are HAF-VT's.

Item tables (shape (|X|+|Y|+1) x d, the last row is padding):
  E_id  learnable, d = q                 E_img, E_tex  frozen CLIP rows, d = e
For every view V in {X, Y, X+Y} and modality m in {id, img, tex}:
  F^V_m = E_m[S^V]                        sequence embeddings
  H^V_m = Attention(F^V_m)                (1), (3): causal self-attention blocks
  h^V_m = H^V_m[last item of the view]
  P^V_m = softmax(Sim(h^V_m, E_m) / tau)  (2), (4)-(6): cosine, temperature tau
  P^V   = alpha P^V_id + beta P^V_img + (1 - alpha - beta) P^V_tex          (7)
Training:   L = L^X + lambda1 L^Y + lambda2 L^{X+Y},  L^V = -log P^V(next)  (8), (9)
Evaluation: P(x) = P^X(x) + lambda1 P^Y(x) + lambda2 P^{X+Y}(x), argmax over the
            target's domain; roles of X and Y swapped for Y targets.     (10), (11)
The 'merged' configuration (Table 4's original framework) keeps only V = X+Y: P = P^{X+Y}.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hafvt.config import Config, modality_weights
from hafvt.data.batches import VIEW_INDEX, target_rows
from hafvt.models import fused_ce
from hafvt.models.attention import Encoder, run_stacked
from hafvt.models.lookup import rows

# The training loss core: True = the row-chunked fused form (hafvt.models.fused_ce), which never
# holds the (targets x items) scores; False = ``softmax_nll`` below, the plain reference form.
FUSED_CE = True


def softmax_nll(q: torch.Tensor, E: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """-log softmax(q E^T)[target] per row: the reference form, which holds the (rows x items) scores.

    The scores stay in the matmul's dtype (bf16 under autocast); the log-sum-exp reduces them in
    float32. ``fused_ce.fused_softmax_nll`` computes the same in row chunks (tests compare them).
    """
    logits = q @ E.T
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf"))
    return torch.logsumexp(logits.float(), dim=-1) - (q.float() * rows(E, target).float()).sum(-1)


def mix_modalities(P: dict, w: dict):
    """P^V = alpha P^V_id + beta P^V_img + (1 - alpha - beta) P^V_tex, eq. (7); ``w`` from ``modality_weights``."""
    return sum(w[m] * P[m] for m in w)


def mix_views(P: dict, domain, lambda1: float, lambda2: float):
    """Eq. (10): P^X + lambda1 P^Y + lambda2 P^{X+Y} for X-target rows (X and Y swapped for Y-target rows).

    ``P`` maps views to (rows, columns) probabilities (torch or numpy), ``domain`` (rows,) is 0 for X.
    The merged configuration has the view X+Y alone: P = P^{X+Y}.
    """
    if set(P) == {"xy"}:
        return P["xy"]
    for_x = P["x"] + lambda1 * P["y"] + lambda2 * P["xy"]
    for_y = P["y"] + lambda1 * P["x"] + lambda2 * P["xy"]
    where = torch.where if isinstance(for_x, torch.Tensor) else np.where
    return where(domain[:, None] == 0, for_x, for_y)


class HAFVT(nn.Module):
    """The model of both papers; ``cfg.modalities`` and ``cfg.views`` select the Table 4 row."""

    def __init__(self, cfg: Config, n_x: int, n_y: int, E_img: np.ndarray | None = None, E_tex: np.ndarray | None = None):
        super().__init__()
        self.cfg, self.n_x, self.n_y, self.n_items = cfg, n_x, n_y, n_x + n_y
        self.views = cfg.view_names()
        self.w = modality_weights(cfg)  # alpha, beta, 1 - alpha - beta of eq. (7)
        self.modalities = list(self.w)
        self.E_id = nn.Embedding(self.n_items + 1, cfg.q, padding_idx=self.n_items)
        nn.init.normal_(self.E_id.weight, std=0.02)
        with torch.no_grad():
            self.E_id.weight[self.n_items].zero_()
        frozen = {"img": E_img, "tex": E_tex}
        dims = {"id": cfg.q}
        for m in ("img", "tex"):
            if m in self.modalities:
                table = frozen[m]
                if table is None:
                    raise ValueError(f"modality {m!r} needs its frozen CLIP table (embedding cache); none was given")
                if table.shape[0] != self.n_items:
                    raise ValueError(f"E_{m} has {table.shape[0]} rows, the scenario has {self.n_items} items")
                t = F.normalize(torch.as_tensor(np.asarray(table), dtype=torch.float32), dim=-1)
                self.register_buffer(f"E_{m}", torch.cat([t, t.new_zeros(1, t.shape[1])]), persistent=False)
                dims[m] = t.shape[1]
        self.enc = nn.ModuleDict({f"{v}_{m}": Encoder(dims[m], cfg) for v in self.views for m in self.modalities})
        self.run_stacked = run_stacked  # cfg.batched_encoders: the encoders of one width as one pass
        self.inv_tau = 1.0 / cfg.temperature
        self.softmax_nll = fused_ce.fused_softmax_nll if FUSED_CE else softmax_nll
        if cfg.compile and torch.cuda.is_available():
            if FUSED_CE:
                fused_ce.compile_kernels()
            else:
                self.softmax_nll = torch.compile(softmax_nll, dynamic=True)

    # ------------------------------------------------------------------ pieces of the equations
    def table(self, m: str) -> torch.Tensor:
        return self.E_id.weight if m == "id" else getattr(self, f"E_{m}")

    def encode(self, batch: dict, v: str, m: str, need_weights: bool = False):
        """H^V_m = Attention(F^V_m), eq. (1)."""
        i = VIEW_INDEX[v]
        F_seq = rows(self.table(m), batch["seq"][:, i])
        return self.enc[f"{v}_{m}"](F_seq, batch["pos"][:, i], need_weights)

    def encode_all(self, batch: dict, pairs: list[tuple[str, str]], need_weights: bool = False) -> dict:
        """H^V_m = Attention(F^V_m) and the attention weights for every (V, m) of ``pairs``, as ``encode``;
        with ``cfg.batched_encoders`` the encoders of one width (q for id, e for img and tex) run as one pass."""
        if not self.cfg.batched_encoders:
            return {(v, m): self.encode(batch, v, m, need_weights) for v, m in pairs}
        out = {}
        for d in dict.fromkeys(self.table(m).shape[1] for _, m in pairs):
            group = [(v, m) for v, m in pairs if self.table(m).shape[1] == d]
            F_seq = torch.stack([rows(self.table(m), batch["seq"][:, VIEW_INDEX[v]]) for v, m in group])
            pos = torch.stack([batch["pos"][:, VIEW_INDEX[v]] for v, _ in group])
            H, weights = self.run_stacked([self.enc[f"{v}_{m}"] for v, m in group], F_seq, pos, need_weights)
            for k, pair in enumerate(group):
                out[pair] = H[k], [None if w is None else w[k] for w in weights]
        return out

    def compile_encoders(self, **options) -> None:
        """torch.compile the encoders (CUDA): each one, or with ``cfg.batched_encoders`` their stacked pass."""
        if self.cfg.batched_encoders:
            self.run_stacked = torch.compile(run_stacked, **options)
        else:
            for enc in self.enc.values():
                enc.compile(**options)

    def readout(self, H: torch.Tensor, batch: dict, v: str) -> torch.Tensor:
        """h^V_m: the view's last item (or last slot, ``cfg.readout``)."""
        if self.cfg.readout == "last_slot" or v == "xy":
            return H[:, -1]
        return H[torch.arange(len(H), device=H.device), batch["last"][:, VIEW_INDEX[v]]]

    def item_rows(self, m: str) -> torch.Tensor:
        """E_m with unit rows (the frozen tables are normalised once, at construction)."""
        E = self.table(m)[: self.n_items]
        return F.normalize(E, dim=-1) if m == "id" else E

    def query(self, h: torch.Tensor) -> torch.Tensor:
        """h / (||h|| tau): the cosine of eq. (2) with the temperature folded into the query."""
        return F.normalize(h, dim=-1) * self.inv_tau

    def sim(self, h: torch.Tensor, m: str) -> torch.Tensor:
        """Sim(h, E_m) / tau over every item, eq. (2)."""
        E = self.item_rows(m)
        return self.query(h) @ E.to(h.dtype).T

    def domain_mask(self, v: str, device) -> torch.Tensor | None:
        """With ``view_softmax='domain'``, S^X scores only X items and S^Y only Y items."""
        if self.cfg.view_softmax == "all" or v == "xy":
            return None
        in_y = torch.arange(self.n_items, device=device) >= self.n_x
        return in_y if v == "x" else ~in_y  # True = excluded

    def logits(self, h: torch.Tensor, v: str, m: str, dtype=torch.float32) -> torch.Tensor:
        logits = self.sim(h, m).to(dtype)
        mask = self.domain_mask(v, logits.device)
        return logits if mask is None else logits.masked_fill(mask, float("-inf"))

    def view_log_prob(self, h: dict[str, torch.Tensor], v: str, target: torch.Tensor) -> torch.Tensor:
        """log P^V(target), P^V the modality mixture of eq. (7), computed stably in log space."""
        mask = self.domain_mask(v, target.device)
        terms = [math.log(self.w[m]) - self.softmax_nll(self.query(h[m]), self.item_rows(m), target, mask)
                 for m in self.modalities]
        return torch.logsumexp(torch.stack(terms), 0)

    def modality_probs(self, h: torch.Tensor, v: str, m: str) -> torch.Tensor:
        """P^V_m over every item (float64), eqs. (4)-(6)."""
        return self.logits(h, v, m, torch.float64).softmax(-1)

    def view_probs(self, h: dict[str, torch.Tensor], v: str) -> torch.Tensor:
        """P^V over every item (float64), eq. (7)."""
        return mix_modalities({m: self.modality_probs(h[m], v, m) for m in self.modalities}, self.w)

    def view_weights(self) -> dict[str, float]:
        """Loss weight of each view: eq. (9), or its role-swapped sum with ``loss_form='symmetric'``."""
        if self.views == ("xy",):
            return {"xy": 1.0}
        l1, l2 = self.cfg.lambda1, self.cfg.lambda2
        if self.cfg.loss_form == "symmetric":
            return {"x": 1.0 + l1, "y": 1.0 + l1, "xy": 2 * l2}
        return {"x": 1.0, "y": l1, "xy": l2}

    # ------------------------------------------------------------------ training
    def loss(self, batch: dict, counts: dict[str, int] | None = None,
             sum_scale: dict[str, float] | None = None) -> torch.Tensor:
        """L = L^X + lambda1 L^Y + lambda2 L^{X+Y}, eq. (9); every slot with a target counts (mean per view).

        ``counts[v]`` (number of slots with a target, known on the host) lets the rows be
        gathered without a device sync; without it they are counted with a sync. When every
        view's softmax runs over all items, the views' rows share one product per modality.
        ``sum_scale[v]`` replaces a view's mean by its sum times that factor (a rank's share of a
        batch split over processes, ``hafvt.distributed``); empty views then stay in the graph.
        """
        segments = []  # (view, rows of the flattened (B*L) slots, their targets)
        for v in self.views:
            tgt = batch["tgt"][:, VIEW_INDEX[v]].reshape(-1)
            rows = target_rows(tgt, None if counts is None else counts[v])
            if len(rows) or sum_scale is not None:
                segments.append((v, rows, tgt[rows]))
        groups = [segments] if self.cfg.view_softmax == "all" else [[seg] for seg in segments]
        weight, total = self.view_weights(), 0.0
        H = self.encode_all(batch, [(v, m) for group in groups for m in self.modalities for v, *_ in group])
        for group in groups:
            h = {m: torch.cat([H[v, m][0].flatten(0, 1)[rows] for v, rows, _ in group]) for m in self.modalities}
            log_p = self.view_log_prob(h, group[0][0] if len(group) == 1 else "xy", torch.cat([t for *_, t in group]))
            for (v, rows, _), lp in zip(group, log_p.split([len(rows) for _, rows, _ in group])):
                view_loss = lp.mean() if sum_scale is None else lp.sum() * sum_scale[v]
                total = total - weight[v] * view_loss
        return total

    # ------------------------------------------------------------------ evaluation
    def representations(self, batch: dict, need_weights: bool = False):
        """h^V_m for every view and modality (and, if asked, the attention weights)."""
        H = self.encode_all(batch, [(v, m) for v in self.views for m in self.modalities], need_weights)
        h = {v: {m: self.readout(H[v, m][0], batch, v) for m in self.modalities} for v in self.views}
        attn = {(v, m): H[v, m][1] for v in self.views for m in self.modalities} if need_weights else {}
        return h, attn

    @torch.no_grad()
    def scores(self, batch: dict) -> torch.Tensor:
        """P(i | S) of eq. (10) for every item (B, |X|+|Y|), float64; rows use their target's domain."""
        return self.fuse(self.representations(batch)[0], batch["domain"])

    def fuse(self, h: dict, domain: torch.Tensor) -> torch.Tensor:
        """Eq. (10) from the representations h^V_m: P^X + l1 P^Y + l2 P^{X+Y}, X and Y swapped for Y targets."""
        return mix_views({v: self.view_probs(h[v], v) for v in self.views}, domain, self.cfg.lambda1, self.cfg.lambda2)

    @torch.no_grad()
    def explain(self, batch: dict) -> dict:
        """Attention weights and per-modality/per-view probabilities, for the notebooks' widgets."""
        h, attn = self.representations(batch, need_weights=True)
        per = {(v, m): self.modality_probs(h[v][m], v, m) for v in self.views for m in self.modalities}
        return {"attention": attn, "modality_probs": per, "fused": self.fuse(h, batch["domain"])}
