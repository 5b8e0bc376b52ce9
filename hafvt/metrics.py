"""Ranking metrics for the papers' protocol (see PROTOCOL.md, "Scoring").

All functions are vectorised torch and work on CPU or GPU tensors.

Tie policies (how candidates scoring exactly the target's score count):

- ``"target"``:  rank = 1 + #greater            (C2DSR rule: ties go to the target)
- ``"average"``: rank = 1 + #greater + #equal/2 (expected rank, random tie-breaking)
- ``"against"``: rank = 1 + #greater + #equal   (ties go against the target)

NaN scores raise ``ValueError``: under the "target" rule a NaN target would
otherwise get rank 1.
"""
from __future__ import annotations

import math

import torch

TIE_POLICIES = ("target", "average", "against")
METRIC_KEYS = ("mrr", "ndcg@5", "ndcg@10", "hr@1", "hr@5", "hr@10")

# Elements per chunk of the (rows x items) comparison in ``full_ranks``.
_CHUNK_ELEMS = 1 << 24


def _check_tie(tie: str) -> None:
    if tie not in TIE_POLICIES:
        raise ValueError(f"unknown tie policy {tie!r}; expected one of {TIE_POLICIES}")


def _check_finite(scores: torch.Tensor) -> None:
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError("scores contain NaN")


def _combine(greater: torch.Tensor, equal: torch.Tensor, tie: str) -> torch.Tensor:
    g = greater.to(torch.float64)
    e = equal.to(torch.float64)
    if tie == "target":
        return 1.0 + g
    if tie == "average":
        return 1.0 + g + 0.5 * e
    return 1.0 + g + e


def ranks_from_counts(greater: torch.Tensor, equal: torch.Tensor, tie: str = "target") -> torch.Tensor:
    """1-based float64 ranks from the counts of items scoring above and equal to the target (itself excluded)."""
    _check_tie(tie)
    return _combine(greater, equal, tie)


def sampled_ranks(scores: torch.Tensor, tie: str = "target") -> torch.Tensor:
    """Ranks of the target among sampled candidates.

    ``scores`` is (n, 1+K): column 0 the target's score, columns 1.. the
    negatives' (duplicates count as separate candidates). Returns (n,) float64.
    """
    _check_tie(tie)
    if scores.dim() != 2 or scores.shape[1] < 1:
        raise ValueError(f"scores must be (n, 1+K), got {tuple(scores.shape)}")
    _check_finite(scores)
    target = scores[:, :1]
    neg = scores[:, 1:]
    greater = (neg > target).sum(dim=1)
    equal = (neg == target).sum(dim=1) if tie != "target" else greater.new_zeros(())
    return _combine(greater, equal, tie)


def full_ranks(
    scores: torch.Tensor,
    target: torch.Tensor,
    tie: str = "target",
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Ranks of the target among all items of its domain.

    ``scores`` is (n, n_items), ``target`` (n,) the target's column index,
    ``exclude`` an optional bool mask (n, n_items) of items left out of the
    ranking; it must not mark the target. Rows are processed in chunks to
    bound the size of temporaries. Returns (n,) float64 on ``scores.device``.
    """
    _check_tie(tie)
    if scores.dim() != 2:
        raise ValueError(f"scores must be (n, n_items), got {tuple(scores.shape)}")
    n, m = scores.shape
    target = torch.as_tensor(target, device=scores.device).long().reshape(-1)
    if target.numel() != n:
        raise ValueError(f"target has {target.numel()} entries for {n} score rows")
    if n and (target.min() < 0 or target.max() >= m):
        raise ValueError(f"target index out of range [0, {m})")
    if exclude is not None:
        exclude = torch.as_tensor(exclude, device=scores.device).bool()
        if exclude.shape != scores.shape:
            raise ValueError(f"exclude shape {tuple(exclude.shape)} != scores shape {tuple(scores.shape)}")
        if n and exclude.gather(1, target[:, None]).any():
            raise ValueError("exclude marks the target of some row")
    _check_finite(scores)

    step = max(1, _CHUNK_ELEMS // max(m, 1))
    out = torch.empty(n, dtype=torch.float64, device=scores.device)
    for lo in range(0, n, step):
        s = scores[lo : lo + step]
        t = target[lo : lo + step, None]
        ts = s.gather(1, t)
        gt = s > ts
        eq = s == ts
        if exclude is not None:
            keep = ~exclude[lo : lo + step]
            gt &= keep
            eq &= keep
        greater = gt.sum(dim=1)
        equal = eq.sum(dim=1) - 1  # the target equals itself
        out[lo : lo + step] = _combine(greater, equal, tie)
    return out


def metrics_from_ranks(ranks: torch.Tensor) -> dict:
    """MRR, NDCG@5/10, HR@1/5/10 (fractions) and ``n`` from 1-based ranks.

    MRR = mean(1/rank), no cut-off; NDCG@k = mean(1/log2(rank+1) if rank<=k
    else 0); HR@k = mean(rank<=k). Fractional ranks (the "average" tie policy)
    use the same formulas, the cut-off applied to the fractional value (so
    rank 10.5 is outside the top 10). Empty input gives NaN for every metric.
    """
    r = torch.as_tensor(ranks).to(torch.float64).reshape(-1)
    n = int(r.numel())
    if n == 0:
        return {**{k: math.nan for k in METRIC_KEYS}, "n": 0}
    if (r < 1).any() or torch.isnan(r).any():
        raise ValueError("ranks must be >= 1")
    gain = 1.0 / torch.log2(r + 1.0)
    out = {"mrr": float((1.0 / r).mean())}
    for k in (5, 10):
        out[f"ndcg@{k}"] = float(torch.where(r <= k, gain, torch.zeros_like(gain)).mean())
    for k in (1, 5, 10):
        out[f"hr@{k}"] = float((r <= k).to(torch.float64).mean())
    out["n"] = n
    return out


def per_domain(ranks: torch.Tensor, domains: torch.Tensor) -> dict:
    """``{"X": metrics, "Y": metrics}``; ``domains`` is (n,) with 0 for X, 1 for Y."""
    r = torch.as_tensor(ranks).reshape(-1)
    d = torch.as_tensor(domains, device=r.device).reshape(-1)
    if d.numel() != r.numel():
        raise ValueError(f"domains has {d.numel()} entries for {r.numel()} ranks")
    if d.numel() and not bool(((d == 0) | (d == 1)).all()):
        raise ValueError("domains must be 0 (X) or 1 (Y)")
    return {"X": metrics_from_ranks(r[d == 0]), "Y": metrics_from_ranks(r[d == 1])}


def format_table_row(metrics: dict, keys: tuple[str, ...] = ("mrr", "ndcg@5", "ndcg@10")) -> str:
    """Metrics x100 with two decimals, like the papers' tables: ``"9.16  7.95  8.85"``."""
    return "  ".join(f"{100.0 * metrics[k]:.2f}" for k in keys)
