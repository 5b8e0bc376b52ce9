"""``hafvt reproduce``: re-run every row of one of the papers' Tables 2-4 and write the table files."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="train every row of Table 2, 3 or 4 for N seeds and write OUT/table<k>.{json,md,tex}")
    p.add_argument("dir", type=Path, help="scenario directory (demo, derived mini benchmark or the benchmark)")
    p.add_argument("--table", type=int, required=True, choices=[2, 3, 4])
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, help="override every row's epochs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override for every row")
    p.add_argument("--rows", help="comma-separated subset of the table's rows (default: all)")
    p.add_argument("--out", type=Path, required=True, help="output folder (finished runs in OUT/runs are reused)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from hafvt.reproduce import DOMAINS, reproduce_table

    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    t = reproduce_table(args.dir, args.table, args.seeds, args.out, device=args.device, epochs=args.epochs,
                        overrides=args.overrides, rows=rows, progress=not args.quiet)
    print(f"table {t['table']} ({t['label']}): {args.out}/table{t['table']}.md")
    for r in t["rows"]:
        if r["seeds_done"]:
            m, a = r["metrics"]["sampled"], r["metrics_average_ties"]["sampled"]
            print(f"  {r['row']:<14} sampled MRR " + "  ".join(f"{d} {m[d]['mrr']['mean']:.2f}±{m[d]['mrr']['std']:.2f} (avg ties {a[d]['mrr']['mean']:.2f})" for d in DOMAINS))
        else:
            print(f"  {r['row']:<14} no finished run: {'; '.join(r['errors'])}")
    return 1 if t["errors"] else 0
