"""How much the fusion weights matter: a trained HAF-VT re-scored with other alpha, beta (eq. 7) and
lambda1, lambda2 (eq. 10), without retraining.

The weights act only where probabilities are mixed, so the per-view, per-modality probabilities
P^V_m of every test line's sampled candidates are computed once (``candidate_parts``; for a finished run,
``hafvt.widgets.Explorer.candidate_parts``) and re-mixed
instantly (``remix_metrics``) by the model's own mixing functions (``mix_modalities``, ``mix_views``).
At the run's weights the re-mix gives the run's own sampled metrics at its checkpoint's epoch,
exactly (``tests/test_fusion_weights.py``). What it does not show: a model *trained* with other
weights (eq. 9 trains the views with lambda1, lambda2; eq. 7's alpha and beta weigh the modalities
inside the training loss too).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from hafvt.config import Config, modality_weights
from hafvt.metrics import per_domain, sampled_ranks
from hafvt.models.hafvt import mix_modalities, mix_views

WEIGHTS = ("alpha", "beta", "lambda1", "lambda2")


@dataclass
class CandidateParts:
    """P^V_m at each line's candidates (column 0 = the target), float64, as the model computed them."""

    probs: dict  # (view, modality) -> (lines, 1 + n_neg) tensor
    domain: torch.Tensor  # (lines,) 0 = X target, 1 = Y target
    cfg: Config  # the run's configuration: its weights, views, modalities and tie rule
    epoch: int  # the checkpoint's epoch

    @property
    def views(self) -> tuple:
        return tuple(dict.fromkeys(v for v, _ in self.probs))

    def weights(self) -> dict[str, float]:
        """The weights the run was trained and scored with."""
        return {k: getattr(self.cfg, k) for k in WEIGHTS}

    def acting(self) -> list[str]:
        """The weights that change this configuration's scores (merged rows have no lambdas, ID-only rows no alpha)."""
        mods = list(self.cfg.modalities)
        out = []
        if len(mods) > 1:
            out += ["alpha"] + (["beta"] if len(mods) == 3 else [])
        if self.views != ("xy",):
            out += ["lambda1", "lambda2"]
        return out


@torch.no_grad()
def candidate_parts(model, views, candidates: torch.Tensor, epoch: int = 0, batch_size: int | None = None) -> CandidateParts:
    """Run the model once over a split; keep P^V_m at the candidates of each line.

    Batches as ``hafvt.train.rank_split`` does (256 lines on a CPU), so every score is computed as in
    the run's own evaluation.
    """
    model.eval()
    dev = views.target.device
    batch_size = batch_size or (256 if dev.type == "cpu" else 1024)
    chunks: dict = {}
    for start in range(0, len(views), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(views)), device=dev)
        batch = views.index(rows)
        h, _ = model.representations(batch)
        for v in model.views:
            for m in model.modalities:
                P = model.modality_probs(h[v][m], v, m)
                chunks.setdefault((v, m), []).append(P.gather(1, candidates[rows]).cpu())
    probs = {k: torch.cat(c) for k, c in chunks.items()}
    return CandidateParts(probs, views.domain.cpu(), model.cfg, epoch)


def remix_scores(parts: CandidateParts, **weights: float) -> torch.Tensor:
    """Eq. (10) of eq. (7)'s mixtures at the candidates, with any of alpha, beta, lambda1, lambda2 changed."""
    unknown = set(weights) - set(WEIGHTS)
    if unknown:
        raise ValueError(f"unknown fusion weights {sorted(unknown)}; choose among {WEIGHTS}")
    w = {**parts.weights(), **weights}
    cfg = replace(parts.cfg, alpha=w["alpha"], beta=w["beta"])
    mw = modality_weights(cfg)
    if any(x < 0 for x in mw.values()) or min(w["lambda1"], w["lambda2"]) < 0:
        raise ValueError(f"fusion weights must be >= 0: modality weights {mw}, lambda1 {w['lambda1']}, lambda2 {w['lambda2']}")
    P = {v: mix_modalities({m: parts.probs[(v, m)] for m in mw}, mw) for v in parts.views}
    return mix_views(P, parts.domain, w["lambda1"], w["lambda2"])


def target_ranks(parts: CandidateParts, **weights: float) -> torch.Tensor:
    """Rank of every line's target among its candidates under the run's tie rule (1 = best)."""
    return sampled_ranks(remix_scores(parts, **weights), parts.cfg.tie)


def remix_metrics(parts: CandidateParts, **weights: float) -> dict:
    """Sampled metrics per domain (fractions, as in ``results.json``) at the given weights."""
    return per_domain(target_ranks(parts, **weights), parts.domain)


def weight_grid(parts: CandidateParts, x: str, y: str, values_x, values_y, metric: str = "mrr") -> dict:
    """``metric`` per domain over a grid of two weights (others at the run's values).

    Returns ``{"X": array (len(values_y), len(values_x)), "Y": ...}``; a point whose modality weights
    would be negative (alpha + beta > 1) is NaN.
    """
    out = {d: np.full((len(values_y), len(values_x)), np.nan) for d in ("X", "Y")}
    for j, vy in enumerate(values_y):
        for i, vx in enumerate(values_x):
            try:
                m = remix_metrics(parts, **{x: float(vx), y: float(vy)})
            except ValueError:
                continue
            for d in out:
                out[d][j, i] = m[d][metric]
    return out


def checkpoint_metrics(run_dir: str | Path, epoch: int) -> dict:
    """The run's own sampled test metrics at an evaluated epoch (its ``log.jsonl`` / history)."""
    res = json.loads((Path(run_dir) / "results.json").read_text())
    for e in res["history"]:
        if e["epoch"] == epoch and "test" in e:
            return e["test"]
    raise ValueError(f"{run_dir}: epoch {epoch} was not evaluated")
