"""``hafvt reproduce``: re-run every row of one of the papers' Tables 2-4 and write the table files."""
from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="train every row of Table 2, 3 or 4 for N seeds and write OUT/table<k>.{json,md,tex}")
    p.add_argument("dir", type=Path, help="scenario directory (demo, derived mini benchmark or the benchmark)")
    p.add_argument("--table", type=int, required=True, choices=[2, 3, 4])
    p.add_argument("--params", type=Path, help="a notebooks/params/*.yaml file: its epochs, seeds, overrides, device and "
                   "rows_table<k> (rows_table4 for Table 4) are the defaults of the options below, and the table records it")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 3)")
    p.add_argument("--device")
    p.add_argument("--epochs", type=int, help="override every row's epochs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override for every row")
    p.add_argument("--rows", help="comma-separated subset of the table's rows (default: all)")
    p.add_argument("--out", type=Path, required=True, help="output folder (finished runs in OUT/runs are reused)")
    p.add_argument("--grid", choices=["paper", "none"], help="'paper': search lr x l2 over the papers' grids per "
                   "trainable row (seed 0, chosen on validation) before the seeds")
    p.add_argument("--grid-rows", help="comma-separated rows to search (default: every trainable row)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process (default 1)")
    p.add_argument("--max-minutes", type=float, help="start no run after this many minutes; the table is built from the "
                   "finished runs (run the command again to resume)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_executor_options(p)
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("sensitivity", help="vary one setting at a time around a row's config; choose on validation only")
    p.add_argument("dir", type=Path, help="scenario directory")
    p.add_argument("--row", required=True, help="a config in configs/ (e.g. id-merged)")
    p.add_argument("--vary", action="append", required=True, metavar="KEY=V1,V2,...", help="values of one config key")
    p.add_argument("--params", type=Path, help="a notebooks/params/*.yaml file for seeds, epochs, overrides, device")
    p.add_argument("--seeds", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--device")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--max-minutes", type=float)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--quiet", action="store_true")
    add_executor_options(p)
    p.set_defaults(func=cmd_sensitivity)


def add_executor_options(p) -> None:
    p.add_argument("--executor", choices=["local", "ray"], default="local", help="'local': this process, or --jobs "
                   "worker processes (default); 'ray': one Ray task per run, over a node's GPUs or a Ray cluster")
    p.add_argument("--address", help="with --executor ray: the cluster to join ('auto', HOST:PORT); default a local Ray")
    p.add_argument("--gpus-per-run", type=float, default=1.0, metavar="F",
                   help="with --executor ray on cuda: GPUs per run; 0.25 trains four runs on each GPU (default 1)")


def ray_options(args) -> dict | None:
    """The ``ray`` argument of ``reproduce_table`` and ``sensitivity``: None runs locally."""
    if args.executor != "ray":
        if args.address is not None:
            raise ValueError("--address needs --executor ray")
        return None
    if not 0 < args.gpus_per_run:
        raise ValueError(f"--gpus-per-run must be > 0, got {args.gpus_per_run}")
    return {"address": args.address, "gpus_per_run": args.gpus_per_run}


def params_defaults(path: Path | None, table: int) -> dict:
    """The runner's options from a papermill parameters file (the notebooks' and the tables' one source)."""
    if path is None:
        return {}
    from hafvt.config import read_yaml_mapping

    if not path.is_file():
        raise FileNotFoundError(f"parameters file not found: {path}")
    p = read_yaml_mapping(path)
    rows = p.get("rows_table4" if table == 4 else "rows_table2") or None
    return {"seeds": p.get("seeds"), "epochs": p.get("epochs"), "device": p.get("device"), "rows": rows,
            "grid": p.get("grid"), "grid_rows": p.get("grid_rows"),
            "overrides": [f"{k}={json.dumps(v)}" for k, v in (p.get("overrides") or {}).items()], "file": p}


def cmd_reproduce(args) -> int:
    from hafvt import provenance
    from hafvt.reproduce import DOMAINS, reproduce_table

    d = _with_params(args, args.table)
    rows = _names(args.rows) or d.get("rows")
    t = reproduce_table(args.dir, args.table, args.seeds or d.get("seeds") or 3, args.out,
                        device=args.device or d.get("device") or "cpu",
                        epochs=args.epochs if args.epochs is not None else d.get("epochs"),
                        overrides=d.get("overrides", []) + args.overrides, rows=rows, progress=not args.quiet,
                        grid=args.grid or d.get("grid"), grid_rows=_names(args.grid_rows) or d.get("grid_rows"),
                        workers=args.jobs, max_minutes=args.max_minutes, ray=ray_options(args))
    print(f"table {t['table']} ({t['label']}): {args.out}/table{t['table']}.md")
    for r in t["rows"]:
        if r["seeds_done"]:
            m, a = r["metrics"]["sampled"], r["metrics_average_ties"]["sampled"]
            print(f"  {r['row']:<14} sampled MRR " + "  ".join(f"{d} {m[d]['mrr']['mean']:.2f}±{m[d]['mrr']['std']:.2f} (avg ties {a[d]['mrr']['mean']:.2f})" for d in DOMAINS))
        else:
            print(f"  {r['row']:<14} no finished run: {'; '.join(r['errors'])}")
    return 1 if t["errors"] else 0


def _names(text: str | None) -> list[str] | None:
    return [r.strip() for r in text.split(",") if r.strip()] if text else None


def _with_params(args, table: int) -> dict:
    """The parameters file's defaults; the file and its content are recorded in every provenance record."""
    from hafvt import provenance

    d = params_defaults(args.params, table)
    if args.params is not None:
        provenance.set_invocation({**provenance.invocation(), "parameters_file": provenance.portable(args.params),
                                   "parameters": d["file"]})
    return d


def cmd_sensitivity(args) -> int:
    from hafvt.config import parse_value
    from hafvt.sensitivity import sensitivity

    d = _with_params(args, 2)
    vary = {}
    for item in args.vary:
        key, _, values = item.partition("=")
        if not values:
            raise ValueError(f"--vary expects KEY=V1,V2,..., got {item!r}")
        vary[key.strip()] = [parse_value(v) for v in values.split(",")]
    r = sensitivity(args.dir, args.row, vary, args.seeds or d.get("seeds") or 2, args.out,
                    device=args.device or d.get("device") or "cpu",
                    epochs=args.epochs if args.epochs is not None else d.get("epochs"),
                    overrides=d.get("overrides", []) + args.overrides, workers=args.jobs, progress=not args.quiet,
                    max_minutes=args.max_minutes, ray=ray_options(args))
    for v in r["variants"]:
        print(f"  {v['key']}={v['value']}: valid MRR X {v['valid_X']:.2f} Y {v['valid_Y']:.2f}; "
              f"test X {v['test_X']:.2f} Y {v['test_Y']:.2f} ({v['seeds']} seeds)")
    print(f"chosen by validation: {r['chosen_by_validation']} -> {args.out}/sensitivity.json")
    return 1 if r["errors"] else 0
