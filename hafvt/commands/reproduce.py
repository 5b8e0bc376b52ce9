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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reproduce)


def params_defaults(path: Path | None, table: int) -> dict:
    """The runner's options from a papermill parameters file (the notebooks' and the tables' one source)."""
    if path is None:
        return {}
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"parameters file not found: {path}")
    p = yaml.safe_load(path.read_text()) or {}
    rows = p.get("rows_table4" if table == 4 else "rows_table2") or None
    return {"seeds": p.get("seeds"), "epochs": p.get("epochs"), "device": p.get("device"), "rows": rows,
            "overrides": [f"{k}={json.dumps(v)}" for k, v in (p.get("overrides") or {}).items()], "file": p}


def cmd_reproduce(args) -> int:
    from hafvt import provenance
    from hafvt.reproduce import DOMAINS, reproduce_table

    d = params_defaults(args.params, args.table)
    if args.params is not None:
        inv = provenance.invocation()
        provenance.set_invocation({**inv, "parameters_file": provenance.portable(args.params), "parameters": d["file"]})
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else d.get("rows")
    t = reproduce_table(args.dir, args.table, args.seeds or d.get("seeds") or 3, args.out,
                        device=args.device or d.get("device") or "cpu",
                        epochs=args.epochs if args.epochs is not None else d.get("epochs"),
                        overrides=d.get("overrides", []) + args.overrides, rows=rows, progress=not args.quiet)
    print(f"table {t['table']} ({t['label']}): {args.out}/table{t['table']}.md")
    for r in t["rows"]:
        if r["seeds_done"]:
            m, a = r["metrics"]["sampled"], r["metrics_average_ties"]["sampled"]
            print(f"  {r['row']:<14} sampled MRR " + "  ".join(f"{d} {m[d]['mrr']['mean']:.2f}±{m[d]['mrr']['std']:.2f} (avg ties {a[d]['mrr']['mean']:.2f})" for d in DOMAINS))
        else:
            print(f"  {r['row']:<14} no finished run: {'; '.join(r['errors'])}")
    return 1 if t["errors"] else 0
