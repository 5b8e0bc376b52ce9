"""From sequences to the three aligned views S^X, S^Y, S^{X+Y} (PROTOCOL.md, "From a line to an example").

Every line becomes, per view, ``maxlen`` left-padded slots of the history (the line without its
last item). The mixed view holds every item; the X-only view the same slots with Y items
replaced by padding and positions counting only X items; the Y-only view likewise. For
training, every slot of a view holds a next-item target: the next mixed item for the mixed
view, the next same-domain item for the X-only and Y-only views (-1 where there is none).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hafvt.data.c2dsr import Scenario, Sequences

VIEW_INDEX = {"x": 0, "y": 1, "xy": 2}


@dataclass
class Views:
    """Tensors of one split; ``seq``/``pos``/``tgt`` are (N, 3, L) in view order x, y, xy."""

    seq: torch.Tensor  # item ids, padding = n_items
    pos: torch.Tensor  # 1..len within the view, 0 on padding
    tgt: torch.Tensor  # next-item target of every slot, -1 where none
    last: torch.Tensor  # (N, 3) slot of the last item of each view (L-1 where the view is empty)
    target: torch.Tensor  # (N,) the line's last item
    domain: torch.Tensor  # (N,) 0 = X, 1 = Y
    n_targets: np.ndarray  # (N, 3) host copy of (tgt >= 0).sum(-1): lets the trainer gather without a sync

    def __len__(self) -> int:
        return len(self.target)

    def to(self, device) -> "Views":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Views(move(self.seq), move(self.pos), move(self.tgt), move(self.last), move(self.target),
                     move(self.domain), self.n_targets)

    def index(self, rows: torch.Tensor) -> dict:
        """A batch as a dict of tensors (rows on the same device as the views)."""
        return {"seq": self.seq[rows], "pos": self.pos[rows], "tgt": self.tgt[rows], "last": self.last[rows],
                "target": self.target[rows], "domain": self.domain[rows]}


def target_rows(tgt: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """Indices of the flattened slots that hold a target (``tgt >= 0``), in order.

    ``n`` is their number when the host knows it (the trainer's counts): then no device sync.
    """
    valid = tgt.reshape(-1) >= 0
    if n is None:
        n = int(valid.sum())
    return torch.argsort((~valid).to(torch.int8), stable=True)[:n]


def _next_in_domain(items: np.ndarray, in_dom: np.ndarray) -> np.ndarray:
    """For every position t, the first item after t that is in the domain (-1 if none)."""
    out = np.full(len(items), -1, dtype=np.int64)
    nxt = -1
    for t in range(len(items) - 1, -1, -1):
        out[t] = nxt
        if in_dom[t]:
            nxt = items[t]
    return out


def build_views(seqs: Sequences, n_x: int, n_items: int, maxlen: int = 15, last_only: bool = False) -> Views:
    """Turn a split into view tensors; ``last_only`` keeps only each view's readout-slot target."""
    n, L = len(seqs), maxlen
    pad = n_items
    seq = np.full((n, 3, L), pad, dtype=np.int64)
    pos = np.zeros((n, 3, L), dtype=np.int64)
    tgt = np.full((n, 3, L), -1, dtype=np.int64)
    last = np.full((n, 3), L - 1, dtype=np.int64)
    for i in range(n):
        items = seqs.sequence(i)
        in_y = items >= n_x
        nxt = {0: _next_in_domain(items, ~in_y), 1: _next_in_domain(items, in_y)}
        hist = slice(max(0, len(items) - 1 - L), len(items) - 1)
        h_items, h_y = items[hist], in_y[hist]
        k = len(h_items)
        slots = np.arange(L - k, L)
        seq[i, 2, slots] = h_items
        pos[i, 2, slots] = np.arange(1, k + 1)
        tgt[i, 2, slots] = items[hist.start + 1 : hist.stop + 1]
        for v, keep in ((0, ~h_y), (1, h_y)):
            s = slots[keep]
            seq[i, v, s] = h_items[keep]
            pos[i, v, s] = np.arange(1, len(s) + 1)
            tgt[i, v, s] = nxt[v][hist][keep]
            if len(s):
                last[i, v] = s[-1]
    if last_only:
        keep = np.zeros_like(tgt, dtype=bool)
        np.put_along_axis(keep, last[..., None], True, axis=2)
        tgt = np.where(keep, tgt, -1)
    target = seqs.targets.astype(np.int64)
    return Views(
        seq=torch.from_numpy(seq), pos=torch.from_numpy(pos), tgt=torch.from_numpy(tgt),
        last=torch.from_numpy(last), target=torch.from_numpy(target),
        domain=torch.from_numpy((target >= n_x).astype(np.int64)),
        n_targets=(tgt >= 0).sum(-1),
    )


def scenario_views(scn: Scenario, maxlen: int = 15, last_only: bool = False) -> dict[str, Views]:
    """Views of every split present (``train`` only when the scenario has one)."""
    out = {}
    for name in ("train", "valid", "test"):
        seqs = getattr(scn, name)
        if seqs is not None:
            out[name] = build_views(seqs, scn.n_x, scn.n_items, maxlen, last_only=last_only and name == "train")
    return out
