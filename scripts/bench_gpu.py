#!/usr/bin/env python
"""One GPU call, one JSON: HAF-VT training and full ranking at Movie-Book scale, CLIP from JPEG files,
and the yardstick (anchor_workload.py) run in the same call, so ``ratio`` compares like with like.

    PYTHONPATH=. python scripts/bench_gpu.py --anchor .bench/anchor_workload.py \\
        --out results/gpu/$(date +%F)-nvidia-h200.json
    PYTHONPATH=. python scripts/bench_gpu.py --quick --device cpu --out /tmp/bench.json   # CPU smoke run

Parts (each prints as it finishes; about 5 minutes on an H200, the anchor included):
  train   the generated ``paper``-size demo (Movie-Book's 100,782 items, 58,515 training lines),
          configs/hafvt.yaml, all positions as targets, compiled bf16: first epoch and steady epochs,
          peak memory; then a few steps of the plain reference loss for comparison
  eval    rank_split of the test split (7,708 lines) against every item of its domain
  clip    ViT-B/32 (random-init: speed does not depend on the weights) from ``--clip-images`` 500-px
          JPEGs: --decode gpu, --decode cpu and --decode cpu --jpeg-draft end to end (each over a quarter
          of the files and all of them: the workers' start and the rate per further file), and inputs
          already on the device
  anchor  ``--anchor`` (default .bench/anchor_workload.py) in a subprocess; its allpos/compile_bf16
  project Tables 2-4 (every trained row x 3 seeds x 100 epochs) from a few eager steps of each row
Image/text tables are random unit rows: the cost does not depend on their values.
``--variants`` times the train part for several sets of config overrides, epochs alternating
(``by_variant``, each variant's steady epoch over the first's, and its ratio to the yardstick), e.g.
the speed-only keys batched_encoders and compile_mode (reduce-overhead = CUDA graphs):

    PYTHONPATH=. python scripts/bench_gpu.py --skip clip,anchor,project \
        --variants "batched_encoders=false;batched_encoders=true;compile_mode=reduce-overhead" --out /tmp/b.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import hafvt.models.hafvt as hafvt_model  # noqa: E402
from hafvt.config import load_config  # noqa: E402
from hafvt.data.batches import scenario_views  # noqa: E402
from hafvt.data.c2dsr import read_scenario  # noqa: E402
from hafvt.data.demo import write_demo  # noqa: E402
from hafvt.models import build_model, needs_tables  # noqa: E402
from hafvt.io import atomic_write_json  # noqa: E402
from hafvt.provenance import record  # noqa: E402
from hafvt.train import compile_model, make_optimizer, rank_split, train_epoch  # noqa: E402

T0 = time.perf_counter()
TABLE_ROWS = ["hafvt", "ifcdsr", "id-txt-hier", "id-merged", "id-img-merged", "id-txt-merged",
              "sasrec", "gru4rec", "srgnn", "c2dsr"]  # trained rows of Tables 2-4 (popularity/transitions are fitted)


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


TABLE_DIM = 512  # CLIP ViT-B/32's e


def random_tables(cfg, n_items: int, e: int | None = None) -> dict:
    e = e or TABLE_DIM
    rng = np.random.default_rng(0)
    out = {}
    for m in needs_tables(cfg):
        t = rng.standard_normal((n_items, e), dtype=np.float32)
        out[m] = t / np.linalg.norm(t, axis=1, keepdims=True)
    return out


class Timer:
    def __init__(self, dev: torch.device):
        self.dev = dev

    def sync(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def __call__(self, fn):
        self.sync()
        t = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t, out


def build(cfg, scn, dev):
    torch.manual_seed(0)
    model = build_model(cfg, scn, random_tables(cfg, scn.n_items)).to(dev)
    if cfg.compile and dev.type == "cuda":
        compile_model(model, cfg)
    return model, make_optimizer(model, cfg, dev)


def bench_train(args, dev, timer, scn, views, partial=lambda out: None) -> dict:
    """``partial(out)`` is called with what is measured so far after every epoch (a call cut short keeps it)."""
    variants = parse_variants(args.variants)
    cfgs = [load_config(REPO / "configs" / "hafvt.yaml", [f"compile={dev.type == 'cuda'}", "amp=true", *args.set, *v])
            for v in variants.values()]
    labels = list(variants)
    train = views["train"]
    runs = [build(cfg, scn, dev) for cfg in cfgs]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    first, steady = [], [[] for _ in runs]
    progress = {}
    for label, cfg, (model, opt) in zip(labels, cfgs, runs):
        s, _ = timer(lambda: train_epoch(model, opt, train, cfg, 0, 1, dev, False))
        first.append(s)
        progress[label] = {"s_first_epoch": round(s, 3), "s_steady_epochs": []}
        partial({"by_variant_so_far": progress})
        log(f"train: first epoch {s:.2f} s ({label})")
    for epoch in range(2, 2 + args.steady_epochs):  # variants alternate epoch by epoch: all see the same machine state
        for i, (label, cfg, (model, opt)) in enumerate(zip(labels, cfgs, runs)):
            s, loss = timer(lambda: train_epoch(model, opt, train, cfg, 0, epoch, dev, False))
            steady[i].append(round(s, 3))
            progress[label]["s_steady_epochs"] = steady[i]
            partial({"by_variant_so_far": progress})
            log(f"train: epoch {epoch} {s:.2f} s (loss {loss:.4f}, {label})")
    cfg, (model, opt) = cfgs[0], runs[0]
    out = {"config": "configs/hafvt.yaml", "amp": cfg.amp, "compile": cfg.compile, "batch_size": cfg.batch_size,
           "batched_encoders": cfg.batched_encoders, "compile_mode": cfg.compile_mode, "pad_last_batch": cfg.pad_last_batch,
           "fused_ce": hafvt_model.FUSED_CE, "s_first_epoch": round(first[0], 3), "s_steady_epochs": steady[0],
           "s_per_epoch_steady": round(float(np.median(steady[0])), 3),
           "peak_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None,
           "train_lines": len(train), "items": scn.n_items}
    if len(runs) > 1:  # --variants: the first is ``ours``; peak_gib then covers all the models
        base = float(np.median(steady[0]))
        out["by_variant"] = {label: {
            "overrides": variants[label], "s_first_epoch": round(f, 3), "s_steady_epochs": st,
            "s_per_epoch_steady": round(float(np.median(st)), 3), "steady_over_first_variant": round(float(np.median(st)) / base, 3)}
            for label, f, st in zip(labels, first, steady)}
        log("train: steady epoch over the first variant's: "
            + ", ".join(f"{k} {v['steady_over_first_variant']}" for k, v in out["by_variant"].items()))
    del runs[1:]
    # full ranking of the test split (the valid split costs the same per line)
    test = views["test"]
    g = torch.Generator().manual_seed(0)
    cands = torch.randint(0, scn.n_x, (len(test), 1 + cfg.n_neg), generator=g).to(dev)
    cands[:, 0] = test.target
    first_eval, _ = timer(lambda: rank_split(model, test, cands, scn.n_x))
    s_eval, _ = timer(lambda: rank_split(model, test, cands, scn.n_x))
    out.update(full_rank_eval_s=round(s_eval, 3), full_rank_eval_first_s=round(first_eval, 3), test_lines=len(test))
    log(f"eval: test split ({len(test)} lines x {scn.n_items} items) {s_eval:.3f} s (first call {first_eval:.3f} s)")
    del model, opt
    # the plain reference loss (holds the targets x items scores), same config, a few steps
    if args.reference_steps:
        hafvt_model.FUSED_CE = False
        try:
            out["reference_loss"] = steps_per_epoch(cfg, scn, train, dev, timer, args.reference_steps, warm=5)
        finally:
            hafvt_model.FUSED_CE = True
        log(f"train: reference loss {out['reference_loss']}")
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def parse_variants(text: str) -> dict[str, list[str]]:
    """'a=1,b=2;c=3' -> {'a=1,b=2': ['a=1', 'b=2'], 'c=3': ['c=3']}; '' -> the config as it is."""
    sets = [v.strip() for v in text.split(";") if v.strip()] if text else []
    return {v: [o.strip() for o in v.split(",") if o.strip()] for v in sets} or {"config": []}


def steps_per_epoch(cfg, scn, train, dev, timer, steps: int, warm: int) -> dict:
    """s/epoch extrapolated from ``steps`` timed steps after ``warm`` (compile included in warm-up)."""
    model, opt = build(cfg, scn, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    s_warm, _ = timer(lambda: train_epoch(model, opt, train, cfg, 0, 0, dev, False, max_steps=warm))
    s, _ = timer(lambda: train_epoch(model, opt, train, cfg, 0, 1, dev, False, max_steps=steps))
    n_steps = math.ceil(len(train) / cfg.batch_size)
    out = {"s_per_step": round(s / steps, 5), "s_per_epoch_extrapolated": round(s / steps * n_steps, 3),
           "warmup_s": round(s_warm, 2),
           "peak_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else None}
    del model, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def project_tables(args, dev, timer, scn, views, ours: dict) -> dict:
    """Every trained row x 3 seeds x 100 epochs (+ validation and test ranking every 5 epochs) on one GPU.

    Rows are timed eager (compiling each would cost more than the slice): an upper bound, except
    for hafvt, which uses the compiled steady epoch measured above.
    """
    rows, total = {}, 0.0
    eval_s = ours.get("full_rank_eval_s", 0.0)
    for name in TABLE_ROWS:
        path = REPO / "configs" / f"{name}.yaml"
        if not path.is_file():
            continue
        cfg = load_config(path, ["compile=false", "amp=true", *args.set])
        train = views["train"] if cfg.train_targets != "last" else scenario_views(scn, cfg.maxlen, True)["train"].to(dev)
        try:
            r = steps_per_epoch(cfg, scn, train, dev, timer, args.row_steps, warm=1 if args.quick else 3)
        except Exception as e:  # a probe: report and go on
            rows[name] = {"error": repr(e)[:300]}
            continue
        evals = cfg.epochs // cfg.eval_every
        r["s_per_epoch_used"] = ours["s_per_epoch_steady"] if name == "hafvt" and "s_per_epoch_steady" in ours \
            else r["s_per_epoch_extrapolated"]
        r["run_s"] = round(cfg.epochs * r["s_per_epoch_used"] + evals * 2 * eval_s, 1)
        rows[name] = r
        total += 3 * r["run_s"]
        log(f"project: {name} {r['s_per_epoch_used']:.2f} s/epoch, run {r['run_s']:.0f} s")
    return {"rows": rows, "seeds": 3, "epochs": 100, "total_min": round(total / 60, 1),
            "method": "per row: eager bf16 s/epoch extrapolated from timed steps after warm-up (hafvt: the compiled "
                      "steady epoch) x epochs, plus valid+test full ranking every eval_every epochs at the measured "
                      "eval time; runs one after another (an upper bound: compiled rows and concurrent runs are faster)"}


def bench_clip(args, dev) -> dict:
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_clip import make_jpegs, on_device

    from hafvt.embed.clip import encode_images, load_encoder

    precision = "fp16" if dev.type == "cuda" else "fp32"
    enc = load_encoder(args.clip_model, "random-init", dev)
    batch = args.clip_batch
    workers = args.workers
    out = {"model": args.clip_model, "pretrained": "random-init", "precision": precision, "batch_size": batch,
           "n_images": args.clip_images, "jpeg_px": args.jpeg_px, "workers": workers}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_jpeg_") as tmp:
        paths = make_jpegs(Path(tmp), args.clip_images, args.jpeg_px, unique=min(256, args.clip_images))
        out["jpeg_mean_bytes"] = int(np.mean([p.stat().st_size for p in paths[:64]]))
        def timed(decode, n, draft=False):
            t = time.perf_counter()
            emb, ok = encode_images(enc, paths[:n], batch, workers, precision, jpeg_draft=draft, decode=decode)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            assert ok.all() and np.isfinite(emb).all()
            return time.perf_counter() - t

        # each call starts its workers anew: time a quarter of the files and all of them, so the start
        # (fixed) and the rate per further file (what a catalogue of 10^5 images sees) come apart
        n, n4 = len(paths), max(1, len(paths) // 4)
        for name, decode, draft in (("clip_end_to_end", "tensor", False), ("clip_end_to_end_cpu_decode", "pil", False),
                                    ("clip_end_to_end_cpu_decode_draft", "pil", True)):  # draft: --jpeg-draft
            timed(decode, batch, draft)  # warm-up
            t4, t = timed(decode, n4, draft), timed(decode, n, draft)
            out[f"{name}_images_per_s"] = round(n / t, 1)
            marginal = (n - n4) / (t - t4) if t > t4 else None
            out[f"{name}_marginal_images_per_s"] = round(marginal, 1) if marginal else None
            out[f"{name}_start_s"] = round(t4 - n4 / marginal, 3) if marginal else None
            log(f"clip: {name} ({'gpu' if decode == 'tensor' and dev.type == 'cuda' else decode} decode{', draft' * draft}) "
                f"{n / t:.0f} images/s over {n} files; {marginal or float('nan'):.0f} images/s per further file "
                f"after a start of {out[f'{name}_start_s']} s")
    out["clip_on_device_images_per_s"] = round(on_device(enc, batch, args.clip_iters, precision, cast=False), 1)
    log(f"clip: on device (autocast) {out['clip_on_device_images_per_s']:.0f} images/s")
    if precision != "fp32":
        out["clip_on_device_weights_cast_images_per_s"] = round(on_device(enc, batch, args.clip_iters, precision, cast=True), 1)
    del enc
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def run_anchor(args, dev) -> dict:
    path = Path(args.anchor)
    if not path.is_file():
        return {"error": f"{args.anchor} not found (copy ../shared/bench/anchor_workload.py there)"}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_anchor_") as tmp:
        env = {**os.environ, "OUT": tmp, "DEV": "cuda" if dev.type == "cuda" else "cpu"}
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True,
                                  timeout=args.anchor_timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {args.anchor_timeout} s"}
        res_file = Path(tmp) / "anchor.json"
        if proc.returncode != 0 or not res_file.is_file():
            return {"error": f"exit {proc.returncode}: {proc.stderr[-800:]}"}
        res = json.loads(res_file.read_text())
    res["seconds"] = round(time.perf_counter() - t, 1)
    res["allpos_compile_bf16_s_per_epoch"] = res.get("train", {}).get("allpos/compile_bf16", {}).get("s_per_epoch")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="the JSON to write (e.g. results/gpu/DATE-KIND.json)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--anchor", default=".bench/anchor_workload.py", help="the yardstick script")
    ap.add_argument("--anchor-timeout", type=int, default=420)
    ap.add_argument("--anchor-after", action="store_true",
                    help="run the yardstick after the train part instead of before it (does the order change ours?)")
    ap.add_argument("--quick", action="store_true", help="shrink everything (CPU smoke run; skips the anchor, whose "
                    "CPU version takes minutes, unless --with-anchor)")
    ap.add_argument("--with-anchor", action="store_true", help="run the anchor under --quick too")
    ap.add_argument("--size", default=None, help="demo size (default: paper; tiny with --quick)")
    ap.add_argument("--steady-epochs", type=int, default=2)
    ap.add_argument("--reference-steps", type=int, default=30, help="timed steps of the plain reference loss (0: skip)")
    ap.add_argument("--row-steps", type=int, default=10, help="timed steps per Tables 2-4 row (0: skip the projection)")
    ap.add_argument("--clip-model", default="ViT-B-32")
    ap.add_argument("--clip-images", type=int, default=6000)
    ap.add_argument("--clip-batch", type=int, default=1024)
    ap.add_argument("--clip-iters", type=int, default=20)
    ap.add_argument("--jpeg-px", type=int, default=500)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: train, clip, anchor, project")
    ap.add_argument("--set", action="append", default=[], help="config overrides for the training runs")
    ap.add_argument("--variants", default="", help="train part: time these sets of config overrides, epochs alternating: "
                    "';' between sets, ',' within one, e.g. 'batched_encoders=false;compile_mode=reduce-overhead' "
                    "(the first is also used for eval and the ratio; default: the config as it is)")
    ap.add_argument("--compile-cache", choices=("fresh", "shared"), default="fresh",
                    help="fresh: an empty inductor/Triton cache, so the first epoch includes compilation as on a new "
                    "machine; shared: the machine's cache (a first epoch after an earlier compile)")
    ap.add_argument("--table-dim", type=int, default=None, help="e of the random image/text tables (default 512, CLIP's; "
                    "q = e puts all nine encoders in one stack)")
    args = ap.parse_args(argv)
    global TABLE_DIM
    if args.quick:
        args.size = args.size or "tiny"
        args.steady_epochs = min(args.steady_epochs, 2)
        args.reference_steps = min(args.reference_steps, 3)
        args.row_steps = min(args.row_steps, 2)
        args.clip_images, args.clip_batch, args.clip_iters, args.workers = 16, 8, 1, min(args.workers, 2)
        args.set = ["q=32", *args.set]
        TABLE_DIM = 32
    if args.table_dim:
        TABLE_DIM = args.table_dim
    skip = set(filter(None, args.skip.split(",")))
    if args.quick and not args.with_anchor:
        skip.add("anchor")
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        torch.set_flush_denormal(True)  # as hafvt.train.run does on CPU
    cache = tempfile.TemporaryDirectory(prefix="bench_gpu_cache_") if args.compile_cache == "fresh" else None
    if cache:  # read when compiling, so set before anything compiles (the anchor's subprocess inherits it)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.environ["TRITON_CACHE_DIR"] = cache.name
    timer = Timer(dev)
    prov = record(str(dev), kind="benchmark")  # a dated measurement of these sources (hafvt provenance check)
    report = {"commit": prov["commit"], "dirty": prov["dirty"], "source_hash": prov["source_hash"],
              "device_name": prov["device"], "torch": torch.__version__, "python": platform.python_version(),
              "command": prov["command"], "timestamp": prov["created"], "quick": args.quick,
              "compile_cache": args.compile_cache, "provenance": prov}
    log(f"{report['device_name']}, torch {torch.__version__}, commit {report['commit']}")

    def anchor_part():  # the yardstick in its own process, while this one holds no GPU memory
        anchor = report["anchor"] = run_anchor(args, dev) if "anchor" not in skip else {"error": "skipped"}
        anchor["order"] = "after ours" if args.anchor_after else "before ours"
        log(f"anchor: allpos/compile_bf16 {anchor.get('allpos_compile_bf16_s_per_epoch')} s/epoch "
            f"({anchor.get('seconds', anchor.get('error'))})")
        save(args.out, report)  # after each part: a call cut short by its time limit still leaves what it measured

    report["anchor"] = {"error": "not run yet"}
    ours = report["ours"] = {}
    if not args.anchor_after:
        anchor_part()

    if "train" not in skip or "project" not in skip:
        with tempfile.TemporaryDirectory(prefix="bench_gpu_demo_") as tmp:
            size = args.size or "paper"
            scn_dir = write_demo(Path(tmp) / f"demo-{size}", size=size, seed=0, images=False)
            scn = read_scenario(scn_dir)
            views = {k: v.to(dev) for k, v in scenario_views(scn, 15).items()}
            log(f"scenario: demo-{size}, {scn.n_items} items, {len(views['train'])} training lines")
            if "train" not in skip:
                ours.update(bench_train(args, dev, timer, scn, views,
                                        partial=lambda part: save(args.out, {**report, "ours": {**ours, **part}})))
                ours.pop("by_variant_so_far", None)
                save(args.out, report)
            if "project" not in skip and args.row_steps:
                report["tables_projection"] = project_tables(args, dev, timer, scn, views, ours)
                save(args.out, report)
    if args.anchor_after:
        anchor_part()
    if "clip" not in skip:
        clip = bench_clip(args, dev)
        report["clip"] = clip
        report["clip_end_to_end_images_per_s"] = clip["clip_end_to_end_images_per_s"]
        report["clip_on_device_images_per_s"] = clip["clip_on_device_images_per_s"]
    save(args.out, report, complete=True)
    if cache:
        cache.cleanup()
    summary = {k: report.get(k) for k in ("ratio", "first_over_steady", "clip_end_to_end_images_per_s",
                                           "clip_on_device_images_per_s", "seconds")}
    summary.update({k: ours.get(k) for k in ("s_per_epoch_steady", "s_first_epoch", "peak_gib", "full_rank_eval_s")})
    log(f"wrote {args.out}: {json.dumps(summary)}")
    return 0


def save(out: Path, report: dict, complete: bool = False) -> None:
    """Write the report with its derived figures; ``complete`` is false until every part asked for ran."""
    ours, a = report["ours"], report["anchor"].get("allpos_compile_bf16_s_per_epoch")
    s = ours.get("s_per_epoch_steady")
    report["ratio"] = round(s / a, 3) if a and s else None
    if a and "by_variant" in ours:
        report["ratio_by_variant"] = {k: round(v["s_per_epoch_steady"] / a, 3) for k, v in ours["by_variant"].items()}
    report["first_over_steady"] = round(ours["s_first_epoch"] / s, 3) if s else None
    report["seconds"] = round(time.perf_counter() - T0, 1)
    report["complete"] = complete
    atomic_write_json(out, report)

if __name__ == "__main__":
    sys.exit(main())
