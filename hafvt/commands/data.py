"""``hafvt stats``, ``hafvt demo``, ``hafvt derive``: the benchmark files and the demo scenario."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hafvt.data.c2dsr import read_scenario, write_scenario
from hafvt.io import atomic_write_json


def register(sub) -> None:
    p = sub.add_parser("stats", help="Table 1 statistics of a scenario directory")
    p.add_argument("dir", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--distributions", action="store_true", help="with --json: add length and popularity data")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("demo", help="generate the synthetic demo scenario (C2DSR files + catalogue + images)")
    p.add_argument("out", type=Path)
    p.add_argument("--size", default="small", choices=["tiny", "small", "paper"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", action=argparse.BooleanOptionalAction, default=None, help="render item images (default: not for 'paper')")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("derive", help="derive a scenario from the splits of another (real-data mini benchmark)")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--train-from", default="valid", choices=["valid", "test"])
    p.add_argument("--train-fraction", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_derive)


def owned_output(out: Path, marker: str, what: str, inputs=()) -> None:
    """Refuse an output folder the command does not own: one of its inputs, or one that holds files but not
    ``marker`` (the file only this command writes there; with it, the command may write it again)."""
    for src in inputs:
        if Path(out).resolve() == Path(src).resolve():
            raise ValueError(f"{out}: the output folder is the input {src}; write {what} into a new folder")
    if Path(out).is_file():
        raise ValueError(f"{out}: is a file; the output must be a folder for {what}")
    held = sorted(p.name for p in Path(out).iterdir()) if Path(out).is_dir() else []
    if held and marker not in held:
        raise ValueError(f"{out}: holds files that are not {what} ({', '.join(held[:3])}{' ...' if len(held) > 3 else ''}); "
                         "choose a new or empty folder")


def cmd_stats(args) -> int:
    from hafvt.data.stats import format_table1, item_popularity, length_distribution, table1

    scn = read_scenario(args.dir)
    stats = table1(scn)
    if args.json:
        if args.distributions:
            stats["lengths"] = length_distribution(scn)
            stats["popularity"] = item_popularity(scn).tolist()
        print(json.dumps(stats, allow_nan=False))
    else:
        print(f"{args.dir}  ({stats['users']:,} users)")
        print(format_table1(stats))
    return 0


def cmd_demo(args) -> int:
    from hafvt.data.demo import COLD_BUCKETS, write_demo
    from hafvt.data.stats import format_table1, table1

    owned_output(args.out, "demo.json", "a demo scenario")
    out = write_demo(args.out, size=args.size, seed=args.seed, images=args.images)
    print(f"demo scenario ({args.size}, seed {args.seed}) written to {out}  [synthetic: not comparable with the papers]")
    print(format_table1(table1(read_scenario(out))))
    cold = json.loads((out / "demo.json").read_text())["cold_targets"]["test"]  # keys sorted: order by COLD_BUCKETS
    labels = [label for _, _, label in COLD_BUCKETS]
    print(f"test targets by occurrences in train ({' | '.join(labels)}): " + "; ".join(
        f"{d} {' | '.join(str(c['buckets'][b]) for b in labels)} ({100 * c['unseen']:.0f}% unseen)" for d, c in cold.items()))
    return 0


def cmd_derive(args) -> int:
    from hafvt.data.derive import derive
    from hafvt.data.stats import format_table1, table1

    owned_output(args.out, "derived.json", "a derived scenario", inputs=[args.src])
    scn = derive(read_scenario(args.src), args.train_from, args.train_fraction, args.seed)
    write_scenario(scn, args.out)
    atomic_write_json(args.out / "derived.json", scn.report)
    print(f"derived scenario written to {args.out}  [{scn.report['label']}]")
    print(format_table1(table1(scn)))
    return 0
