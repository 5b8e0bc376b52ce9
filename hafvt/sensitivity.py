"""How much the choices the papers leave open move a row: one setting varied at a time, the rest at
the row's configuration, several seeds, selected on validation only.

``sensitivity(DIR, "id-merged", {"temperature": [0.05, 0.2, 1.0]}, seeds=2, out=OUT)`` trains every
variant for every seed into ``OUT/runs/<row>/<key>=<value>/seed<k>`` and writes
``OUT/sensitivity.json``: one entry per run (validation and test MRR per domain, selected epochs) and
per variant (means), the variant that validation prefers, and provenance. The test numbers are shown
beside, never used to choose.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hafvt.io import atomic_write_json, exclusive
from hafvt.reproduce import DOMAINS, executor, row_config

RULE = "the variant with the highest validation MRR, averaged over the two domains and the seeds (test never chooses)"


def variant_dir(out: Path, row: str, key: str, value) -> Path:
    return Path(out) / "runs" / row / ("default" if key == "default" else f"{key}={value}")


def sensitivity(scenario_dir, row: str, vary: dict, seeds: int, out, device: str = "cpu", epochs: int | None = None,
                overrides=(), workers: int = 1, progress: bool = True, max_minutes: float | None = None,
                ray: dict | None = None) -> dict:
    from hafvt.data.c2dsr import data_hash
    from hafvt.data.labels import scenario_kind
    from hafvt.executor import Job
    from hafvt.provenance import portable, record

    scenario_dir, out = Path(scenario_dir), Path(out)
    base = row_config(row, epochs, overrides)
    variants = [("default", None)] + [(k, v) for k, values in vary.items() for v in values if v != getattr(base, k)]
    cfgs = {(k, v): base if k == "default" else row_config(row, epochs, [*overrides, f"{k}={v}"]) for k, v in variants}
    jobs = [Job(f"{row} {k}={v} seed {s}", cfgs[(k, v)].to_dict(), variant_dir(out, row, k, v) / f"seed{s}", s)
            for s in range(seeds) for k, v in variants]
    import time

    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    with exclusive(out, "hafvt sensitivity"):
        errors = executor(ray)(scenario_dir, jobs, device, workers, progress, desc=f"sensitivity {row}", deadline=deadline)

    runs, summary = [], []
    for k, v in variants:
        mine = []
        for s in range(seeds):
            f = variant_dir(out, row, k, v) / f"seed{s}" / "results.json"
            if not f.is_file():
                continue
            r = json.loads(f.read_text())
            mine.append({"key": k, "value": v, "seed": s, "run": portable(f, out),
                         **{f"valid_{d}": 100 * r["valid_at_selected"][d]["sampled"]["mrr"] for d in DOMAINS},
                         **{f"test_{d}": 100 * r["metrics"]["sampled"][d]["mrr"] for d in DOMAINS},
                         **{f"test_full_{d}": 100 * r["metrics"]["full"][d]["mrr"] for d in DOMAINS},
                         **{f"epoch_{d}": r["selected_epoch"][d] for d in DOMAINS}})
        runs += mine
        if mine:
            mean = {c: float(np.mean([m[c] for m in mine])) for c in mine[0] if c.startswith(("valid_", "test_"))}
            summary.append({"key": k, "value": v, "seeds": len(mine), **mean,
                            "valid_mean": float(np.mean([mean[f"valid_{d}"] for d in DOMAINS]))})
    chosen = max(summary, key=lambda e: e["valid_mean"], default=None)
    result = {
        "row": row, "scenario": portable(scenario_dir), "label": scenario_kind(scenario_dir)["label"],
        "base_config": base.to_dict(), "vary": vary, "seeds": seeds,
        "unit": "sampled MRR x100 (ties: the config's policy) at each domain's selected epoch",
        "rule": RULE, "chosen_by_validation": chosen and {"key": chosen["key"], "value": chosen["value"]},
        "default_kept": chosen is None or chosen["key"] == "default",
        "variants": summary, "runs": runs, "errors": errors,
        "provenance": record(device, kind="sensitivity", data_hash=data_hash(scenario_dir)),
    }
    atomic_write_json(out / "sensitivity.json", result)
    return result
