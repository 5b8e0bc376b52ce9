"""``hafvt train``: train one configuration on one scenario and write RUN/results.json."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("train", help="train and score one configuration (configs/*.yaml)",
                       description="Over several GPUs: torchrun --nproc-per-node N -m hafvt train ... --device cuda "
                                   "(batch_size is the global batch, split over the processes).")
    p.add_argument("dir", type=Path, help="scenario directory (with a train split)")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--epochs", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, required=True, help="run directory (resumed if it holds a checkpoint)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import json
    import os

    from hafvt.config import load_config
    from hafvt.train import run

    overrides = list(args.overrides) + ([f"epochs={args.epochs}"] if args.epochs is not None else [])
    cfg = load_config(args.config, overrides)
    res = run(args.dir, cfg, args.out, device=args.device, seed=args.seed, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    m = res["metrics"]["sampled"]
    print(json.dumps({"run": str(args.out), "config": cfg.name, "label": res["label"],
                      "sampled_mrr": {d: round(m[d]["mrr"], 4) for d in m},
                      "full_mrr": {d: round(res["metrics"]["full"][d]["mrr"], 4) for d in m},
                      "selected_epoch": res["selected_epoch"]}))
    return 0
