"""Do the papers' claims hold? One row per claim and data set, computed from results JSON only.

A claim compares two table rows (``row`` against ``base``). On each data set whose tables hold both,
the evidence is the per-seed difference of sampled MRR (x100) in each domain, paired by seed: its
mean and a 95% t-interval over seeds. The verdict word follows the interval: *supports* (above 0),
*contradicts* (below 0), *inconclusive* (it contains 0, or one seed, or the mean difference is no larger
than the data set's measured kernel spread: how much the same claim's difference moved when the same build
ran on other CPU kernels, ``scripts/kernel_spread.py``). A claim whose rows did not run
on a data set (FK-mini has no images or titles) is *not tested* there, with the reason. The papers'
gain for the same comparison is quoted beside it (``paper_numbers.json``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hafvt.reproduce import DOMAINS, paper_numbers

BEST_BASELINE = "best baseline"  # the baseline row with the highest mean sampled MRR (average ties) in the domain
BEST_TRAINED = "best trained row"  # likewise over the rows that are not count-based


@dataclass(frozen=True)
class Claim:
    claim: str
    row: str
    base: str
    table: int  # the papers' table that makes the claim (2: main results, 4: ablation)
    quoted: tuple | None  # (paper, row, base) names in paper_numbers.json, or None when no paper states it
    settle: str  # what would settle it with the papers' data


FULL = "hafvt catalogue attach DIR --meta-x META_X --meta-y META_Y && hafvt images DIR && hafvt embed DIR --model ViT-B-32 --pretrained openai"
CLAIMS = [
    Claim("Image fusion helps", "id-img-merged", "id-merged", 4, ("haf-vt", "+ visual fusion", "original framework"),
          f"{FULL} && hafvt reproduce DIR --table 4 --rows id-merged,id-img-merged --seeds 5 --grid paper --device cuda --out OUT"),
    Claim("Title fusion helps", "id-txt-merged", "id-merged", 4, ("haf-vt", "+ textual fusion", "original framework"),
          f"{FULL} && hafvt reproduce DIR --table 4 --rows id-merged,id-txt-merged --seeds 5 --grid paper --device cuda --out OUT"),
    Claim("Hierarchical attention helps (with titles)", "id-txt-hier", "id-txt-merged", 4,
          ("haf-vt", "+ textual fusion + hierarchical attention", "+ textual fusion"),
          f"{FULL} && hafvt reproduce DIR --table 4 --rows id-txt-merged,id-txt-hier --seeds 5 --grid paper --device cuda --out OUT"),
    Claim("Hierarchical attention helps (IDs only; not a row of the papers)", "id-hier", "id-merged", 4, None,
          "hafvt reproduce DIR --table 2 --rows id-merged,id-hier --seeds 5 --grid paper --device cuda --out OUT  # needs the train split only"),
    Claim("HAF-VT beats IFCDSR", "hafvt", "ifcdsr", 4,
          ("haf-vt", "+ textual + visual fusion + hierarchical attention", "+ visual fusion + hierarchical attention"),
          f"{FULL} && hafvt reproduce DIR --table 4 --rows ifcdsr,hafvt --seeds 5 --grid paper --device cuda --out OUT"),
    Claim("HAF-VT beats every baseline", "hafvt", BEST_BASELINE, 2, ("haf-vt", "HAF-VT", BEST_BASELINE),
          f"{FULL} && hafvt reproduce DIR --table 2 --seeds 5 --grid paper --device cuda --out OUT"),
    Claim("IFCDSR beats every baseline", "ifcdsr", BEST_BASELINE, 2, ("ifcdsr", "IFCDSR", BEST_BASELINE),
          f"{FULL} && hafvt reproduce DIR --table 2 --seeds 5 --grid paper --device cuda --out OUT"),
    Claim("A trained model beats the transitions heuristic (not a claim of the papers; a floor they omit)",
          BEST_TRAINED, "transitions", 2, None,
          "hafvt reproduce DIR --table 2 --seeds 5 --grid paper --device cuda --out OUT"),
]
PROPOSED_QUOTED = {"HAF-VT", "IFCDSR"}


def quoted_gain(claim: Claim) -> float | None:
    """The papers' gain for the claim's comparison (MRR x100 in domain X of the claim's table), quoted."""
    if claim.quoted is None:
        return None
    paper, row, base = claim.quoted
    table = 2 if claim.table == 2 else 4
    vals = {n["row"]: n["value"] for n in paper_numbers(table) if n["paper"] == paper and n["side"] == "X" and n["metric"] == "mrr"}
    if base == BEST_BASELINE:
        base_vals = [v for r, v in vals.items() if r not in PROPOSED_QUOTED]
        return None if row not in vals or not base_vals else vals[row] - max(base_vals)
    return vals[row] - vals[base] if row in vals and base in vals else None


def load_tables(paths) -> list[dict]:
    """Table JSON files (or folders holding table*.json) of one data set."""
    out = []
    for p in map(Path, paths):
        for f in sorted(p.glob("table*.json")) if p.is_dir() else [p]:
            if f.is_file():
                out.append(json.loads(f.read_text()))
    return out


def committed_datasets(results: str | Path) -> dict[str, list[Path]]:
    """Every committed results folder that holds tables (``results/<name>/table*.json``), by folder name:
    the evidence a reader's own committed scenario adds to the verdict without a code change."""
    results = Path(results)
    return {p.name: [p] for p in sorted(results.iterdir()) if p.is_dir() and any(p.glob("table*.json"))} if results.is_dir() else {}


def training_protocol(tables: list[dict]) -> str:
    """How a data set's trained rows got lr, L2 and their epoch budget, in words (from the tables' JSON)."""
    trained = [r for t in tables for r in t["rows"] if r["seeds_done"] and not r["count_based"] and r.get("resolved_config")]
    if not trained:
        return "no trained row"
    searched = sorted({row for t in tables if (t.get("grid") or {}).get("searched") == "paper" for row in t["grid"].get("rows") or {}})
    fixed = sorted({(r["resolved_config"]["lr"], r["resolved_config"]["l2"]) for r in trained if r["row"] not in searched})
    parts = []
    if searched:
        parts.append(f"lr and L2 searched over the papers' grid for {len(searched)} row{'s' * (len(searched) != 1)} (seed 0, chosen on validation)")
    if fixed:
        pts = ", ".join(f"lr {a:g}, L2 {b:g}" for a, b in fixed)
        parts.append(f"{'the other rows' if searched else 'every trained row'} at {pts} (the papers' grid not searched)")
    budget = sorted({(r["resolved_config"]["epochs"], r["resolved_config"].get("patience", 0)) for r in trained})
    parts.append("; ".join(f"at most {e} epochs" + (f", stopping {p} evaluations after the best" if p else "") for e, p in budget))
    rising = sorted({r["row"] for r in trained if any((r.get("still_rising") or {}).values())})
    parts.append(f"still rising at the last epoch: {', '.join(rising)}" if rising else "no row still rising at its last epoch")
    return "; ".join(parts)


def _pick(table: dict, name: str, d: str, exclude: str) -> dict | None:
    rows = [r for r in table["rows"] if r["seeds_done"] and r["row"] != exclude]
    if name == BEST_BASELINE:
        rows = [r for r in rows if r["role"] == "baseline"]
    elif name == BEST_TRAINED:
        rows = [r for r in rows if not r["count_based"]]
    else:
        return next((r for r in rows if r["row"] == name), None)
    return max(rows, key=lambda r: r["metrics_average_ties"]["sampled"][d]["mrr"]["mean"], default=None)


SPREADS = "results/kernel-spread"  # <data set>.json: the measured kernel spread of a data set's differences


def kernel_spread(path: str | Path) -> float | None:
    """The kernel spread a ``scripts/kernel_spread.py`` file measured (MRR x100), or None without one."""
    path = Path(path)
    return float(json.loads(path.read_text())["spread"]) if path.is_file() else None


def evidence(claim: Claim, tables: list[dict], spread: float | None = None) -> dict:
    """Per domain: the rows compared, mean difference, 95% interval over seeds, verdict. ``spread``: a
    difference whose size is at most this is no difference (inconclusive, ``within_spread``)."""
    from scipy import stats

    ordered = sorted(tables, key=lambda t: t["table"] != claim.table)  # the claim's own table first
    out = {}
    for d in DOMAINS:
        pair = None
        for t in ordered:
            a = _pick(t, claim.row, d, "")
            b = _pick(t, claim.base, d, a["row"]) if a else None
            if a and b:
                pair = (t, a, b)
                break
        if pair is None:
            have = {r["row"] for t in tables for r in t["rows"] if r["seeds_done"]}
            missing = [n for n in (claim.row, claim.base) if n not in have and n not in (BEST_BASELINE, BEST_TRAINED)]
            out[d] = {"verdict": "not tested", "why": f"{' and '.join(missing) or 'a row to compare'} not run on this data"}
            continue
        t, a, b = pair
        seeds = sorted(set(a["seeds"]) & set(b["seeds"]))
        va = dict(zip(a["seeds"], a["metrics"]["sampled"][d]["mrr"]["values"]))
        vb = dict(zip(b["seeds"], b["metrics"]["sampled"][d]["mrr"]["values"]))
        diff = np.array([va[s] - vb[s] for s in seeds])
        mean = float(diff.mean())
        if len(diff) > 1 and diff.std(ddof=1) > 0:
            half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff)))
        else:
            half = float("nan") if len(diff) == 1 else 0.0
        lo, hi = mean - half, mean + half
        verdict = ("inconclusive" if not np.isfinite(half) else
                   "supports" if lo > 0 else "contradicts" if hi < 0 else "inconclusive")
        within = spread is not None and abs(mean) <= spread
        if within:
            verdict = "inconclusive"
        rising = [r["row"] for r in (a, b) if (r.get("still_rising") or {}).get(d)]
        out[d] = {"row": a["row"], "base": b["row"], "table": t["table"], "seeds": len(seeds), "per_seed": diff.tolist(),
                  "still_rising": rising,
                  "mean": mean, "ci95": [lo, hi], "verdict": verdict, "spread": spread, "within_spread": within,
                  "row_mrr": a["metrics"]["sampled"][d]["mrr"]["mean"], "base_mrr": b["metrics"]["sampled"][d]["mrr"]["mean"],
                  "domain": d}
    return out


def verdict(datasets: dict[str, list], spreads: dict[str, float | None] | None = None) -> list[dict]:
    """``datasets``: name -> table JSON paths, or the tables already loaded (``load_tables``); ``spreads``:
    name -> measured kernel spread (``kernel_spread``). One entry per claim with the evidence of each data set."""
    spreads = spreads or {}
    loaded = {name: ts if all(isinstance(t, dict) for t in ts) else load_tables(ts) for name, ts in datasets.items()}
    rows = []
    for c in CLAIMS:
        rows.append({"claim": c.claim, "compares": f"{c.row} vs {c.base}", "paper_table": c.table,
                     "quoted_gain_x": quoted_gain(c), "settle": c.settle,
                     "evidence": {name: evidence(c, tabs, spreads.get(name)) if tabs else {d: {"verdict": "not tested", "why": "no results"} for d in DOMAINS}
                                  for name, tabs in loaded.items()},
                     "labels": {name: (tabs[0]["label"] if tabs else "") for name, tabs in loaded.items()}})
    return rows


def cell(e: dict) -> str:
    """One evidence cell in words and numbers."""
    if e["verdict"] == "not tested":
        return f"not tested: {e['why']}"
    ci = "" if not np.isfinite(e["ci95"][0]) else f" [{e['ci95'][0]:+.2f}, {e['ci95'][1]:+.2f}]"
    rising = f"; not converged: {', '.join(e['still_rising'])} still rising at the last epoch" if e.get("still_rising") else ""
    spread = f"; inside the kernel spread ±{e['spread']:.2f}" if e.get("within_spread") else ""
    return f"**{e['verdict']}**: {e['mean']:+.2f}{ci} ({e['row']} vs {e['base']}, {e['seeds']} seeds{rising}{spread})"


def long_frame(rows: list[dict]):
    """Per-seed differences in long form (claim, data, domain, seed, difference) for seaborn."""
    import pandas as pd

    recs = [{"claim": r["claim"], "data": name, "domain": d, "difference": v}
            for r in rows for name, ev in r["evidence"].items() for d, e in ev.items() if e["verdict"] != "not tested"
            for v in e["per_seed"]]
    return pd.DataFrame(recs, columns=["claim", "data", "domain", "difference"])


CAVEATS = {
    "demo": "synthetic data with a planted signal and a small demo encoder, not CLIP: shows whether the model and the "
            "protocol can extract that signal, not what happens on Amazon data",
    "derived": "real interactions, but trained on 90% of the valid users (the release lacks the train split) and without "
               "images or titles: tests the ID-only claims and the baselines, not the fusion claims",
    "benchmark": "the papers' data",
}


def summary_markdown(rows: list[dict], kinds: dict[str, str]) -> str:
    """The verdict table as Markdown: one row per claim; quoted gain; each data set's evidence per domain."""
    names = list(rows[0]["evidence"]) if rows else []
    head = ["claim", "paper's gain (X, quoted)"] + [f"{n}: {d}" for n in names for d in DOMAINS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        q = "–" if r["quoted_gain_x"] is None else f"{r['quoted_gain_x']:+.2f}"
        cells = [cell(r["evidence"][n][d]) for n in names for d in DOMAINS]
        lines.append("| " + " | ".join([r["claim"], q, *cells]) + " |")
    lines += ["", "What each data set can show: " + "; ".join(f"**{n}** — {CAVEATS.get(kinds.get(n, ''), kinds.get(n, ''))}"
                                                          for n in names) + "."]
    return "\n".join(lines)


def counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """How many (claim, domain) cells of each data set got each verdict word."""
    out: dict = {}
    for r in rows:
        for name, ev in r["evidence"].items():
            for e in ev.values():
                out.setdefault(name, {}).setdefault(e["verdict"], 0)
                out[name][e["verdict"]] += 1
    return out
