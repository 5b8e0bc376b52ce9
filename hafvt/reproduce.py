"""Tables 2, 3 and 4 of the papers, re-run: every row, every seed, one command.

``reproduce_table`` trains each row of a table (a config in ``configs/``) for each seed through
``hafvt.train.run`` into ``OUT/runs/<row>/seed<k>/`` (a run whose ``results.json`` exists is
skipped, so an interrupted table resumes), then writes ``OUT/table<k>.json``, ``.md`` and ``.tex``:
- per row and domain MRR, NDCG@5, NDCG@10 (x100) as mean ± std over seeds, sampled (999
  negatives) and full-ranking columns, under the configs' tie policy (C2DSR's: ties go to the
  target) and, for every row, under average-rank ties (the fair one for count-based rows);
- the papers' numbers (``paper_numbers.json``) in their own, marked columns and rows;
- a paired test of the best row against the best baseline over per-line reciprocal ranks;
- a cold-item slice: metrics by how often the target item occurs in training;
- the data label (``scenario_kind``), links to every run's results, and provenance.
Tables 2 and 3 run the same rows; the number picks the quoted scenario (Food-Kitchen or
Movie-Book). Table 4 is the ablation (Movie MRR in the papers), with popularity as the floor.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch

from hafvt.executor import finished
from hafvt.io import atomic_write_json, atomic_write_text, exclusive
from hafvt.metrics import metrics_from_ranks

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER_NUMBERS = Path(__file__).resolve().parent / "paper_numbers.json"
MAIN_ROWS = ["popularity", "transitions", "gru4rec", "sasrec", "srgnn", "c2dsr", "tricdr", "mifn", "psjnet", "ifcdsr", "hafvt"]
TABLE_ROWS = {2: MAIN_ROWS, 3: MAIN_ROWS,
              4: ["popularity", "id-merged", "id-hier", "id-img-merged", "id-txt-merged", "id-txt-hier", "ifcdsr", "hafvt"]}
# Rows the papers propose; everything else in a table is a baseline (Table 4: the original framework).
PROPOSED = {2: {"ifcdsr", "hafvt"}, 3: {"ifcdsr", "hafvt"},
            4: {"id-hier", "id-img-merged", "id-txt-merged", "id-txt-hier", "ifcdsr", "hafvt"}}
COUNT_BASED = {"popularity", "transitions"}
QUOTED_SCENARIO = {2: "Food-Kitchen", 3: "Movie-Book", 4: "Movie-Book"}
DOMAIN_NAMES = {"Food-Kitchen": ("Food", "Kitchen"), "Movie-Book": ("Movie", "Book")}
# our row -> (paper, row name in paper_numbers.json) of the quoted number beside it
QUOTED_ROW = {
    2: {"gru4rec": ("haf-vt", "GRU4Rec"), "sasrec": ("haf-vt", "SASRec"), "srgnn": ("haf-vt", "SR-GNN"),
        "tricdr": ("haf-vt", "Tri-CDR"), "mifn": ("haf-vt", "MIFN"), "ifcdsr": ("ifcdsr", "IFCDSR"), "hafvt": ("haf-vt", "HAF-VT")},
    4: {"id-merged": ("haf-vt", "original framework"), "id-img-merged": ("haf-vt", "+ visual fusion"),
        "id-txt-merged": ("haf-vt", "+ textual fusion"), "id-txt-hier": ("haf-vt", "+ textual fusion + hierarchical attention"),
        "ifcdsr": ("haf-vt", "+ visual fusion + hierarchical attention"),
        "hafvt": ("haf-vt", "+ textual + visual fusion + hierarchical attention")},
}
QUOTED_ROW[3] = {**QUOTED_ROW[2], "psjnet": ("haf-vt", "PSJNet")}  # PSJNet is quoted for Movie-Book only
METRICS = ("mrr", "ndcg@5", "ndcg@10")
KINDS = ("sampled", "full")
DOMAINS = ("X", "Y")
COLD_BUCKETS = ((0, 0, "0"), (1, 4, "1-4"), (5, 19, "5-19"), (20, math.inf, "20+"))


# --------------------------------------------------------------------------- quoted numbers


def paper_numbers(table: int | None = None) -> list[dict]:
    """The papers' printed numbers (percent), all quoted, optionally of one table."""
    rows = json.loads(PAPER_NUMBERS.read_text())["numbers"]
    return [r for r in rows if table is None or r["table"] == table]


def quoted_value(table: int, paper: str, row: str, side: str, metric: str) -> float | None:
    for r in paper_numbers(table):
        if (r["paper"], r["row"], r["side"], r["metric"]) == (paper, row, side, metric):
            return r["value"]
    return None


def quoted_rows(table: int) -> list[dict]:
    """One entry per (paper, row): ``{"paper", "row", "quoted": True, "X": {metric: v}, "Y": {...}}``."""
    out: dict = {}
    for r in paper_numbers(table):
        e = out.setdefault((r["paper"], r["row"]), {"paper": r["paper"], "row": r["row"], "quoted": True, "X": {}, "Y": {}})
        e[r["side"]][r["metric"]] = r["value"]
    return list(out.values())


# --------------------------------------------------------------------------- running


def row_config(row: str, epochs: int | None, overrides=()):
    from hafvt.config import load_config

    path = CONFIGS / f"{row}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown row {row!r}: no {path}")
    over = list(overrides) + ([f"epochs={epochs}"] if epochs is not None else [])
    cfg = load_config(path, over)
    if cfg.name != row:  # an override may not rename a row
        raise ValueError(f"row {row!r}: config name is {cfg.name!r}")
    return cfg


def executor(ray: dict | None):
    """``hafvt.executor.execute``, or with ``ray`` options the Ray one (same arguments, same errors)."""
    from functools import partial

    from hafvt import executor as local

    if ray is None:
        return local.execute
    from hafvt import ray_executor

    return partial(ray_executor.execute, **ray)


def run_dir(out: Path, row: str, seed: int) -> Path:
    return Path(out) / "runs" / row / f"seed{seed}"


PAPER_GRID = {"lr": [1e-3, 5e-4, 1e-4], "l2": [1e-4, 5e-5, 1e-5]}  # both papers' grids (section 4.1)
GRID_RULE = ("each trainable row's lr x l2 point is chosen with seed 0 by the mean over the two domains of the "
             "validation MRR at each domain's selected epoch; the other seeds then train at that point")


def grid_dir(out: Path, row: str, lr: float, l2: float) -> Path:
    return Path(out) / "grid" / row / f"lr{lr:g}-l2{l2:g}"


def _valid_score(results: dict) -> float:
    return sum(results["valid_at_selected"][d]["sampled"]["mrr"] for d in DOMAINS) / len(DOMAINS)


def search_grid(scenario_dir, out: Path, rows: list[str], cfgs: dict, epochs, overrides, device, workers, progress,
                scn, deadline=None, ray=None) -> tuple[dict, list]:
    """Train seed 0 of every row at every point of ``PAPER_GRID``; pick each row's point on validation.

    Returns ``({row: {"points": {point: score}, "selected": {"lr", "l2"}}}, errors)`` and updates ``cfgs``;
    the selected point's run becomes the row's seed-0 run (it is not trained twice).
    """
    from hafvt.executor import Job

    execute = executor(ray)
    points = [(lr, l2) for lr in PAPER_GRID["lr"] for l2 in PAPER_GRID["l2"]]
    jobs = [Job(f"{row} lr={lr:g} l2={l2:g}", row_config(row, epochs, [*overrides, f"lr={lr}", f"l2={l2}"]).to_dict(),
                grid_dir(out, row, lr, l2), 0) for row in rows for lr, l2 in points]
    errors = execute(scenario_dir, jobs, device, workers, progress, desc="grid", scenario=scn, deadline=deadline)
    grid = {}
    for row in rows:
        scores = {}
        for lr, l2 in points:
            f = grid_dir(out, row, lr, l2) / "results.json"
            if f.is_file():
                scores[(lr, l2)] = _valid_score(json.loads(f.read_text()))
        if not scores:
            continue
        lr, l2 = max(scores, key=scores.get)  # first of equal scores in grid order
        cfgs[row] = row_config(row, epochs, [*overrides, f"lr={lr}", f"l2={l2}"])
        seed0 = run_dir(out, row, 0)
        if not finished(seed0):
            seed0.mkdir(parents=True, exist_ok=True)
            for name in ("results.json", "test_ranks.npz"):
                shutil.copy2(grid_dir(out, row, lr, l2) / name, seed0 / name)
        grid[row] = {"points": {f"lr={a:g} l2={b:g}": 100 * v for (a, b), v in scores.items()},
                     "selected": {"lr": lr, "l2": l2}}
    return grid, errors


def reproduce_table(scenario_dir, table: int, seeds: int, out, *args, **kwargs) -> dict:
    """``_reproduce_table`` with ``out`` locked (``hafvt.io.exclusive``): a second command on the same
    folder gets an error instead of training the same runs at the same time."""
    with exclusive(out, "hafvt reproduce"):
        return _reproduce_table(scenario_dir, table, seeds, out, *args, **kwargs)


def _reproduce_table(scenario_dir, table: int, seeds: int, out, device: str = "cpu", epochs: int | None = None,
                     overrides=(), rows=None, progress: bool = True, grid: str | None = None, grid_rows=None,
                     workers: int = 1, max_minutes: float | None = None, ray: dict | None = None) -> dict:
    """Train every row of ``table`` for seeds 0..seeds-1 (resuming finished runs); write the table files.

    ``grid="paper"`` first searches the papers' lr x l2 grid for the trainable rows (``grid_rows``, default
    all of them; ``GRID_RULE``); ``workers`` trains that many runs at once (``hafvt.executor``). Runs go
    seed by seed (every row's seed 0 first); ``max_minutes`` starts no run after that budget and builds
    the table from the runs that finished (run again to resume). ``ray`` (``{"address", "gpus_per_run"}``)
    runs them as Ray tasks instead (``hafvt.ray_executor``).
    """
    import time

    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    from hafvt.data.c2dsr import read_scenario
    from hafvt.executor import Job

    execute = executor(ray)
    if table not in TABLE_ROWS:
        raise ValueError(f"table must be one of {sorted(TABLE_ROWS)}, got {table}")
    if seeds < 1:
        raise ValueError("seeds must be >= 1")
    if grid not in (None, "", "none", "paper"):
        raise ValueError(f"grid must be 'paper' or none, got {grid!r}")
    scenario_dir, out = Path(scenario_dir), Path(out)
    rows = list(rows or TABLE_ROWS[table])
    cfgs = {row: row_config(row, epochs, overrides) for row in rows}
    scn = read_scenario(scenario_dir)
    searched, errors = {}, []
    if grid == "paper":
        wanted = [r for r in (grid_rows or rows) if r in rows and r not in COUNT_BASED]
        searched, grid_errors = search_grid(scenario_dir, out, wanted, cfgs, epochs, overrides, device, workers, progress, scn,
                                            deadline, ray)
        errors += [{"row": e["label"].split()[0], "seed": 0, "error": e["error"]} for e in grid_errors]
    jobs = [Job(f"{row} seed {s}", cfgs[row].to_dict(), run_dir(out, row, s), s) for s in range(seeds) for row in rows]
    for e in execute(scenario_dir, jobs, device, workers, progress, desc=f"table {table}", scenario=scn if workers <= 1 else None,
                     deadline=deadline):
        row, _, seed = e["label"].rpartition(" seed ")
        errors.append({"row": row, "seed": int(seed), "error": e["error"]})
    result = build_table(scenario_dir, table, seeds, out, cfgs, scn, errors, device)
    result["grid"] = {"searched": "paper" if grid == "paper" else "none: every row at its config's lr and l2",
                      "values": PAPER_GRID if grid == "paper" else None, "rule": GRID_RULE if grid == "paper" else None,
                      "rows": searched}
    write_table(out, result)
    return result


def load_table(out, table: int) -> dict:
    """The table file written by ``reproduce_table``."""
    path = Path(out) / f"table{table}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no table file; run `hafvt reproduce DIR --table {table} --out {out}`")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- assembling


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64) * 100.0
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": v.tolist()}


def _aggregate(results: list[dict], key: str) -> dict:
    return {kind: {d: {m: _stats([r[key][kind][d][m] for r in results]) for m in METRICS} for d in DOMAINS} for kind in KINDS}


def _load_ranks(out: Path, row: str, seeds: list[int]) -> list[dict]:
    ranks = []
    for s in seeds:
        with np.load(run_dir(out, row, s) / "test_ranks.npz") as z:
            ranks.append({k: z[k] for k in z.files})
    return ranks


def _mean_rr(ranks: list[dict], key: str) -> np.ndarray:
    return np.mean([1.0 / r[key] for r in ranks], axis=0)


PAIRED_COMPARISON = {True: "best proposed row vs best baseline",
                     False: "best baseline vs next-best baseline (no proposed row finished)"}


def paired_test(out: Path, rows: list[dict], proposed: set) -> dict:
    """Best row vs best baseline, per domain, over per-line reciprocal ranks (averaged over seeds).

    'Best' = highest mean sampled MRR with average-rank ties. The first row is the best proposed
    row when the table has one (else the best row), the second the best other baseline.
    ``comparison`` says which: with no finished proposed row, two baselines are compared.
    """
    done = [r for r in rows if r["seeds_done"]]
    has_proposed = any(r["row"] in proposed for r in done)
    out_d = {"tests": "Wilcoxon signed-rank (two-sided, zero differences dropped) and paired t-test (two-sided), scipy.stats",
             "unit": "per test line reciprocal rank, averaged over the seeds of each row; average-rank ties",
             "comparison": PAIRED_COMPARISON[has_proposed], "proposed_finished": has_proposed,
             "domains": {}}
    for d in DOMAINS:
        score = lambda r: r["metrics_average_ties"]["sampled"][d]["mrr"]["mean"]  # noqa: E731
        best_overall = max(done, key=score, default=None)
        cand = [r for r in done if r["row"] in proposed] or done
        a = max(cand, key=score, default=None)
        bases = [r for r in done if r["row"] not in proposed and a is not None and r["row"] != a["row"]]
        b = max(bases, key=score, default=None)
        if a is None or b is None:
            out_d["domains"][d] = {"skipped": "needs two finished rows, one of them a baseline"}
            continue
        entry = {"best_row": best_overall["row"], "row_a": a["row"], "row_b_best_baseline": b["row"],
                 "comparison": out_d["comparison"]}
        out_d["domains"][d] = {**entry, **compare_lines(out, a, b, d)}
    return out_d


def compare_lines(out: Path, a: dict, b: dict, d: str) -> dict:
    """Row a vs row b on the test lines of domain d: per-line reciprocal ranks (mean over each row's
    seeds, average-rank ties), Wilcoxon signed-rank and paired t-test, sampled and full ranking."""
    from scipy import stats

    ra, rb = _load_ranks(out, a["row"], a["seeds"]), _load_ranks(out, b["row"], b["seeds"])
    dom = ra[0]["domain"] == (0 if d == "X" else 1)
    entry = {}
    for kind in KINDS:
        x = _mean_rr(ra, f"{kind}_average")[dom]
        y = _mean_rr(rb, f"{kind}_average")[dom]
        res = {"n": int(dom.sum()), "mrr_a": 100 * float(x.mean()), "mrr_b": 100 * float(y.mean()),
               "mean_difference": 100 * float((x - y).mean())}
        try:
            w = stats.wilcoxon(x, y)
            res["wilcoxon"] = {"statistic": float(w.statistic), "p": float(w.pvalue)}
        except ValueError as e:  # e.g. every difference is zero
            res["wilcoxon"] = {"statistic": None, "p": None, "note": str(e)}
        t = stats.ttest_rel(x, y)
        res["t_test"] = {"statistic": float(t.statistic), "p": float(t.pvalue)}
        entry[kind] = res
    return entry


# Questions every table answers when it holds both rows ("best trained row": the non-count row with the
# highest mean sampled MRR, average ties, in the domain).
PAIRS = [("id-hier", "id-merged"), ("id-hier-symmetric", "id-hier"), ("id-txt-hier", "id-txt-merged"),
         ("hafvt", "ifcdsr"), ("best trained row", "transitions")]


def named_pairs(out: Path, rows: list[dict]) -> list[dict]:
    """Paired tests of ``PAIRS`` (where both rows finished), per domain."""
    done = {r["row"]: r for r in rows if r["seeds_done"]}
    res = []
    for a_name, b_name in PAIRS:
        for d in DOMAINS:
            if a_name == "best trained row":
                trained = [r for r in done.values() if not r["count_based"]]
                a = max(trained, key=lambda r: r["metrics_average_ties"]["sampled"][d]["mrr"]["mean"], default=None)
            else:
                a = done.get(a_name)
            b = done.get(b_name)
            if a is not None and b is not None:
                res.append({"pair": f"{a_name} vs {b_name}", "row_a": a["row"], "row_b": b["row"], "domain": d,
                            **compare_lines(out, a, b, d)})
    return res


def cold_slice(out: Path, rows: list[dict], train_items: np.ndarray, test_targets: np.ndarray, n_items: int) -> dict:
    """MRR and NDCG@10 (x100, average-rank ties, mean over seeds) by the target's training frequency."""
    freq = np.bincount(np.asarray(train_items), minlength=n_items)[np.asarray(test_targets)]
    buckets = {label: (freq >= lo) & (freq <= hi) for lo, hi, label in COLD_BUCKETS}
    res = {"unit": "percent; average-rank ties; mean over seeds", "bucket_by": "occurrences of the target item in the train split",
           "rows": {}}
    counts = None
    for r in rows:
        if not r["seeds_done"]:
            continue
        ranks = _load_ranks(out, r["row"], r["seeds"])
        dom = ranks[0]["domain"]
        counts = {d: {b: int((m & (dom == i)).sum()) for b, m in buckets.items()} for i, d in enumerate(DOMAINS)}
        entry = {}
        for kind in KINDS:
            rk = np.stack([z[f"{kind}_average"] for z in ranks])  # (seeds, lines)
            entry[kind] = {}
            for i, d in enumerate(DOMAINS):
                entry[kind][d] = {}
                for b, m in buckets.items():
                    sel = m & (dom == i)
                    if not sel.any():
                        entry[kind][d][b] = {"mrr": None, "ndcg@10": None}
                        continue
                    m = metrics_from_ranks(torch.from_numpy(rk[:, sel].ravel()))  # every seed has the same lines
                    entry[kind][d][b] = {"mrr": 100 * m["mrr"], "ndcg@10": 100 * m["ndcg@10"]}
        res["rows"][r["row"]] = entry
    res["n_lines"] = counts
    return res


def build_table(scenario_dir: Path, table: int, seeds: int, out: Path, cfgs: dict, scn, errors: list, device: str) -> dict:
    from hafvt.data.c2dsr import data_hash
    from hafvt.data.labels import scenario_kind
    from hafvt.provenance import portable, record

    kind = scenario_kind(scenario_dir)
    quoted_scn = QUOTED_SCENARIO[table]
    names = DOMAIN_NAMES[quoted_scn]
    rows = []
    for row, cfg in cfgs.items():
        done = [s for s in range(seeds) if finished(run_dir(out, row, s))]
        results = [json.loads((run_dir(out, row, s) / "results.json").read_text()) for s in done]
        entry = {"row": row, "role": "proposed" if row in PROPOSED[table] else "baseline",
                 "count_based": row in COUNT_BASED, "config": f"configs/{row}.yaml", "config_hash": cfg.hash(),
                 "resolved_config": cfg.to_dict(),
                 "tie": cfg.tie, "seeds": done, "seeds_done": len(done),
                 "runs": [(run_dir(Path("."), row, s) / "results.json").as_posix() for s in done],
                 "errors": [e["error"] for e in errors if e["row"] == row]}
        if results:
            entry["metrics"] = _aggregate(results, "metrics")
            entry["metrics_average_ties"] = _aggregate(results, "metrics_average_ties")
            entry["seconds_per_run"] = float(np.mean([r["seconds"] for r in results]))
            entry["selected_epoch"] = {d: [r["selected_epoch"][d] for r in results] for d in DOMAINS}
            entry["last_epoch"] = [r["last_epoch"] for r in results]
            # a seed whose selected epoch is the last one of a run that patience did not stop: still rising
            entry["still_rising"] = {d: sum(r["selected_at_last_epoch"][d] for r in results) for d in DOMAINS}
            entry["devices"] = sorted({r["provenance"]["device"] for r in results})
        q = QUOTED_ROW[table].get(row)
        entry["quoted"] = None if q is None else {
            "paper": q[0], "row": q[1], "quoted": True,
            **{d: {m: quoted_value(table, q[0], q[1], d, m) for m in METRICS} for d in DOMAINS}}
        rows.append(entry)
    result = {
        "table": table,
        "scenario": portable(scenario_dir),
        "data_kind": kind["kind"],
        "label": kind["label"],
        "comparable_with_paper": kind["kind"] == "benchmark",
        "quoted_scenario": quoted_scn,
        "domains": {"X": names[0], "Y": names[1]},
        "unit": "percent (x100), mean ± std over seeds (sample std, ddof=1; 0 with one seed)",
        "tie": {"columns": "the configs' tie policy ('target' = C2DSR's rule: a tied negative ranks below the target)",
                "average_ties": "every row is also reported with average-rank ties (metrics_average_ties); "
                                "count-based rows are shown with them in the Markdown/LaTeX (book: Reproduction decisions, 'The scoring protocol')"},
        "sampled": "target + 999 negatives from the target's domain, drawn once with the candidate seed (C2DSR protocol)",
        "full": "target ranked against every item of its domain",
        "rows": rows,
        "quoted": quoted_rows(table),
        "errors": errors,
    }
    proposed = PROPOSED[table]
    result["paired_test"] = paired_test(out, rows, proposed)
    result["pairs"] = named_pairs(out, rows)
    result["cold_items"] = cold_slice(out, rows, scn.split("train").items, scn.split("test").targets, scn.n_items)
    result["provenance"] = record(device, kind="table", seeds=list(range(seeds)), data_hash=data_hash(scenario_dir),
                                  config_hashes={r: c.hash() for r, c in cfgs.items()})
    return result


# --------------------------------------------------------------------------- writing


def write_table(out: Path, t: dict) -> None:
    k = t["table"]
    atomic_write_json(Path(out) / f"table{k}.json", t)
    t = load_table(out, k)  # the .md and .tex are what the file renders to (``hafvt provenance check`` compares)
    atomic_write_text(Path(out) / f"table{k}.md", to_markdown(t))
    atomic_write_text(Path(out) / f"table{k}.tex", to_latex(t))


def _pm(s: dict | None, tex: bool = False) -> str:
    if s is None:
        return "–"
    return f"${s['mean']:.2f} \\pm {s['std']:.2f}$" if tex else f"{s['mean']:.2f} ± {s['std']:.2f}"


def _q(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _header(t: dict) -> list[str]:
    X, Y = t["domains"]["X"], t["domains"]["Y"]
    return [f"{X} MRR", f"{X} NDCG@5", f"{X} NDCG@10", f"{Y} MRR", f"{Y} NDCG@5", f"{Y} NDCG@10"]


def _cells(m: dict, tex: bool = False) -> list[str]:
    return [_pm(m[d][x], tex) for d in DOMAINS for x in METRICS]


def to_markdown(t: dict) -> str:
    X, Y = t["domains"]["X"], t["domains"]["Y"]
    L = [f"# Table {t['table']} re-run ({'Food-Kitchen' if t['table'] == 2 else 'Movie-Book'} in the papers)", ""]
    L.append(f"**Data:** `{t['scenario']}` — {t['label']}"
             + ("" if t["comparable_with_paper"] else " — **not comparable with the paper's numbers**"))
    L.append(f"Domains: X = {X}, Y = {Y} (the paper's names for the quoted scenario). {t['unit']}.")
    L.append("Ties: columns use each config's tie policy (C2DSR's rule: ties go to the target); "
             "count-based rows (popularity, transitions) are shown again with average-rank ties.")
    L.append("")
    hdr = _header(t)
    for kind, title in (("sampled", "Sampled ranking (target + 999 negatives)"), ("full", "Full ranking (every item of the domain)")):
        extra = [f"{X} MRR [paper, quoted]", f"{Y} MRR [paper, quoted]", "selected epoch X / Y"] if kind == "sampled" else []
        L += [f"## {title}", "", "| " + " | ".join(["row", "role", "seeds", *hdr, *extra]) + " |",
              "|" + "---|" * (3 + len(hdr) + len(extra))]
        for r in t["rows"]:
            if not r["seeds_done"]:
                L.append(f"| {r['row']} | {r['role']} | 0 | " + " | ".join(["failed" if r["errors"] else "–"] * len(hdr)) + (" | – | – | – |" if kind == "sampled" else " |"))
                continue
            rowcells = [r["row"] + (" (ties: " + r["tie"] + ")" if r["count_based"] else ""), r["role"], str(r["seeds_done"])] + _cells(r["metrics"][kind])
            if kind == "sampled":
                q = r["quoted"]
                rowcells += [_q(q and q["X"]["mrr"]), _q(q and q["Y"]["mrr"]), selected_epochs(r)]
            L.append("| " + " | ".join(rowcells) + " |")
            if r["count_based"]:
                L.append("| " + " | ".join([f"{r['row']} (average-rank ties)", r["role"], str(r["seeds_done"])] + _cells(r["metrics_average_ties"][kind])
                                          + (["–", "–", "–"] if kind == "sampled" else [])) + " |")
        L.append("")
    if any(rising_note(r) for r in t["rows"]):
        L += ["**Still rising:** " + "; ".join(rising_note(r) for r in t["rows"] if rising_note(r))
              + " — selected at the last epoch of a run that patience did not stop; more epochs may raise these rows.", ""]
    g = t.get("grid") or {}
    L += ["## Learning rate and L2", "", f"Grid: {g.get('searched', 'none')}."
          + (f" Values {g['values']}; {g['rule']}." if g.get("values") else "")]
    for row, e in (g.get("rows") or {}).items():
        L.append(f"- {row}: selected lr {e['selected']['lr']:g}, l2 {e['selected']['l2']:g} (validation MRR x100 per point: "
                 + ", ".join(f"{k} {v:.2f}" for k, v in e["points"].items()) + ")")
    L.append("")
    L += ["## Quoted from the papers (not re-run; the papers' data and protocol)", "",
          "| paper | row [quoted] | " + " | ".join(hdr) + " |", "|" + "---|" * (2 + len(hdr))]
    for q in t["quoted"]:
        L.append(f"| {q['paper']} | {q['row']} | " + " | ".join(_q(q[d].get(m)) for d in DOMAINS for m in METRICS) + " |")
    pt = t["paired_test"]
    prop = pt.get("proposed_finished", any(r["role"] == "proposed" and r["seeds_done"] for r in t["rows"]))  # older tables
    L += ["", f"## Paired test: {PAIRED_COMPARISON[prop]}", "", pt["tests"] + "; " + pt["unit"] + ".", ""]
    L += [f"| domain | ranking | row A ({'best proposed' if prop else 'best baseline'}) | row B ({'best baseline' if prop else 'next-best baseline'}) "
          "| n | MRR A | MRR B | diff | Wilcoxon p | t-test p |", "|---|---|---|---|---|---|---|---|---|---|"]
    for d, e in t["paired_test"]["domains"].items():
        if "skipped" in e:
            L.append(f"| {d} | – | {e['skipped']} | | | | | | | |")
            continue
        for kind in KINDS:
            x = e[kind]
            wp = x["wilcoxon"]["p"]
            L.append(f"| {d} | {kind} | {e['row_a']} | {e['row_b_best_baseline']} | {x['n']} | {x['mrr_a']:.2f} | {x['mrr_b']:.2f} | "
                     f"{x['mean_difference']:+.2f} | {'–' if wp is None else f'{wp:.3g}'} | {x['t_test']['p']:.3g} |")
    if t.get("pairs"):
        L += ["", "## Paired tests of named questions", "", "| question | domain | row A | row B | ranking | n | MRR A | MRR B | diff | Wilcoxon p | t-test p |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in t["pairs"]:
            for kind in KINDS:
                x = e[kind]
                wp = x["wilcoxon"]["p"]
                L.append(f"| {e['pair']} | {e['domain']} | {e['row_a']} | {e['row_b']} | {kind} | {x['n']} | {x['mrr_a']:.2f} | "
                         f"{x['mrr_b']:.2f} | {x['mean_difference']:+.2f} | {'–' if wp is None else f'{wp:.3g}'} | {x['t_test']['p']:.3g} |")
    c = t["cold_items"]
    L += ["", "## Cold items: sampled MRR by the target's training frequency", "", f"{c['unit']}; bucket by {c['bucket_by']}.", ""]
    labels = [b[2] for b in COLD_BUCKETS]
    if c["n_lines"]:
        L.append("| row | " + " | ".join(f"{d} {b}" for d in DOMAINS for b in labels) + " |")
        L.append("|" + "---|" * (1 + 2 * len(labels)))
        L.append("| *test lines* | " + " | ".join(str(c["n_lines"][d][b]) for d in DOMAINS for b in labels) + " |")
        for row, e in ((r["row"], c["rows"][r["row"]]) for r in t["rows"] if r["row"] in c["rows"]):
            L.append(f"| {row} | " + " | ".join(_q(e["sampled"][d][b]["mrr"]) for d in DOMAINS for b in labels) + " |")
    L += ["", "## Runs", ""]
    for r in t["rows"]:
        links = ", ".join(f"[seed {s}]({p})" for s, p in zip(r["seeds"], r["runs"]))
        L.append(f"- {r['row']} (`{r['config']}`, config hash `{r['config_hash']}`): {links or 'none finished'}"
                 + (f" — errors: {'; '.join(r['errors'])}" if r["errors"] else ""))
    p = t["provenance"]
    L += ["", "## Provenance", "", f"commit `{p['commit']}`{' (uncommitted changes to the sources)' if p['dirty'] else ''}; "
          f"source hash `{p['source_hash']}`; seeds {p['seeds']}; data hash `{p['data_hash'][:16]}`; device {p['device']}; "
          f"created {p['created']}.", "", f"Regenerate: `{p['command']}`"
          + (f" (parameters: `{p['parameters_file']}`)" if p.get("parameters_file") else "") + ".", ""]
    return "\n".join(L)


def selected_epochs(r: dict) -> str:
    """Mean selected epoch per domain over seeds, with the flag of a still-rising curve."""
    if not r.get("selected_epoch") or r["count_based"]:
        return "–"
    flag = " (still rising)" if rising_note(r) else ""
    return " / ".join(f"{np.mean(r['selected_epoch'][d]):.0f}" for d in DOMAINS) + f" of ≤{max(r['last_epoch'])}" + flag


def rising_note(r: dict) -> str:
    n = r.get("still_rising") or {}
    if r["count_based"] or not any(n.values()):
        return ""
    seeds = r["seeds_done"]
    return f"{r['row']} (" + ", ".join(f"{d}: {k} of {seeds} seeds" for d, k in n.items() if k) + ")"


def _tex(s: str) -> str:
    return s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&").replace("#", "\\#")


def to_latex(t: dict) -> str:
    X, Y = t["domains"]["X"], t["domains"]["Y"]
    out = [f"% Table {t['table']} re-run: {_tex(t['label'])}" + ("" if t["comparable_with_paper"] else " -- not comparable with the paper"),
           "% mean $\\pm$ std over seeds, x100; ties: config policy (C2DSR rule), count-based rows also with average-rank ties"]
    for kind in KINDS:
        out += ["\\begin{table}[t]", "\\centering", "\\small",
                f"\\caption{{Table {t['table']} re-run, {kind} ranking ({_tex(t['label'])}"
                + ("" if t["comparable_with_paper"] else "; not comparable with the paper") + "). Quoted rows are the papers' numbers.}",
                "\\begin{tabular}{l" + "c" * 6 + "}", "\\toprule",
                f"Model & MRR ({X}) & NDCG@5 & NDCG@10 & MRR ({Y}) & NDCG@5 & NDCG@10 \\\\", "\\midrule"]
        for r in t["rows"]:
            if not r["seeds_done"]:
                continue
            out.append(_tex(r["row"]) + " & " + " & ".join(_cells(r["metrics"][kind], tex=True)) + " \\\\")
            if r["count_based"]:
                out.append(_tex(r["row"]) + " (avg.\\ ties) & " + " & ".join(_cells(r["metrics_average_ties"][kind], tex=True)) + " \\\\")
        if kind == "sampled":
            out += ["\\midrule", f"\\multicolumn{{7}}{{l}}{{\\textit{{Quoted from the papers ({QUOTED_SCENARIO[t['table']]}), not re-run}}}} \\\\"]
            for q in t["quoted"]:
                out.append(f"\\textit{{{_tex(q['row'])} [{q['paper']}, quoted]}} & " + " & ".join(_q(q[d].get(m)) for d in DOMAINS for m in METRICS) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out).replace("–", "--")
