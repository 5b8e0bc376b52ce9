"""Training throughput of a configuration at Movie-Book scale: sequences/s, s/epoch, peak memory.

    python scripts/bench_train.py --device cuda --out bench.json           # paper-size demo, hafvt config
    python scripts/bench_train.py --device cpu --size small --steps 5      # a quick look on CPU

The scenario is the generated ``paper``-size demo (Movie-Book's item and sequence counts). Its
image/text tables are random unit rows unless the scenario has an embedding cache: the cost
does not depend on their values. Each variant times ``--steps`` training steps after warm-up
and extrapolates to an epoch; ``--full-epochs N`` also times N whole epochs of the last variant
(the first includes compiling; ``pad_last_batch`` keeps the last batch's shape, later ones are the steady state).
A benchmark, not a test: report its figures as ratios to ../shared/bench/anchor_workload.py.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hafvt.config import load_config
from hafvt.data.batches import scenario_views
from hafvt.data.c2dsr import read_scenario
from hafvt.data.demo import write_demo
from hafvt.models import build_model, needs_tables
from hafvt.provenance import device_name, versions
from hafvt.train import load_tables, make_optimizer, rank_split, train_epoch

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"eager_fp32": (False, False), "eager_bf16": (True, False), "compile_bf16": (True, True)}


def tables_for(scn_dir: Path, cfg, n_items: int, e: int = 512):
    try:
        return load_tables(scn_dir, cfg)[0], "embedding cache"
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        t = {m: rng.standard_normal((n_items, e), dtype=np.float32) for m in needs_tables(cfg)}
        return {m: x / np.linalg.norm(x, axis=1, keepdims=True) for m, x in t.items()}, "random unit rows (benchmark only)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", type=Path, help="a scenario directory (default: generate the demo of --size)")
    ap.add_argument("--size", default="paper", choices=["tiny", "small", "paper"])
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "hafvt.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--variants", default="eager_fp32,eager_bf16,compile_bf16")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--full-epochs", type=int, default=0, help="also time this many whole epochs of the last variant")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    dev = torch.device(args.device)
    torch.set_flush_denormal(True)  # as hafvt.train.run does on CPU
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    scn_dir = args.scenario or write_demo(Path(tempfile.mkdtemp()) / f"demo-{args.size}", size=args.size, seed=0, images=False)
    scn = read_scenario(scn_dir)
    report = {"scenario": str(scn_dir), "items": scn.n_items, "train_lines": len(scn.train), "device": device_name(args.device),
              "versions": versions(), "config": str(args.config), "variants": {}}
    for name in args.variants.split(","):
        amp, comp = VARIANTS[name]
        cfg = load_config(args.config, [*args.overrides, f"amp={amp}", f"compile={comp}"])
        views = scenario_views(scn, cfg.maxlen, cfg.train_targets == "last")
        train = views["train"].to(dev)
        tables, source = tables_for(scn_dir, cfg, scn.n_items)
        report["tables"] = source
        torch.manual_seed(0)
        model = build_model(cfg, scn, tables).to(dev)
        if comp and dev.type == "cuda":
            model.compile_encoders()
        opt = make_optimizer(model, cfg, dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        train_epoch(model, opt, train, cfg, 0, 0, dev, False, max_steps=args.warmup)
        sync()
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_epoch(model, opt, train, cfg, 0, 1, dev, False, max_steps=args.steps)
        sync()
        per_step = (time.perf_counter() - t0) / args.steps
        steps = math.ceil(len(train) / cfg.batch_size)
        row = {"s_per_step": round(per_step, 5), "s_per_epoch_extrapolated": round(per_step * steps, 2),
               "sequences_per_s": round(cfg.batch_size / per_step), "warmup_s": round(warm, 1),
               "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None}
        if args.full_epochs and name == args.variants.split(",")[-1]:
            row["s_full_epochs"] = []
            for epoch in range(2, 2 + args.full_epochs):
                t0 = time.perf_counter()
                train_epoch(model, opt, train, cfg, 0, epoch, dev, False)
                sync()
                row["s_full_epochs"].append(round(time.perf_counter() - t0, 2))
            row["sequences_per_s_last_full_epoch"] = round(len(train) / row["s_full_epochs"][-1])
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None
            test = views["test"].to(dev)
            cands = torch.randint(0, scn.n_x, (len(test), 1000), device=dev)
            cands[:, 0] = test.target
            t0 = time.perf_counter()
            rank_split(model, test, cands, scn.n_x)
            sync()
            row["s_eval_test_split"] = round(time.perf_counter() - t0, 2)
        report["variants"][name] = row
        print(name, json.dumps(row), flush=True)
        del model, opt
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
