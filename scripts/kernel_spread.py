"""How far the same build's numbers move on other CPU kernels: the kernel spread the verdict uses.

``make kernel-spread`` trains the book's demo tables again with ATen's scalar kernels and MKL/oneDNN
limited to AVX2 (``KERNELS_ENV`` in the Makefile), then this script compares them with the book's own
tables, made on the default kernels by the same sources, rows, seeds and thread counts:

    python scripts/kernel_spread.py book/_static/results/demo build/kernel-spread/demo --out results/kernel-spread/demo.json

The spread is the largest change, over every claim and domain of ``hafvt.verdict``, of the claim's mean
difference (sampled MRR x100); the file also gives each row's largest per-seed change. The verdict counts a
difference no larger than the spread as no difference.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hafvt import provenance, verdict
from hafvt.io import atomic_write_json
from hafvt.reproduce import DOMAINS

METRICS = (("sampled", "mrr"), ("sampled", "ndcg@10"), ("full", "mrr"))


def compare(reference: list[dict], second: list[dict]) -> dict:
    ref = {t["table"]: t for t in reference}
    sec = {t["table"]: t for t in second}
    if not sec or not set(sec) <= set(ref):
        raise SystemExit(f"the second build's tables {sorted(sec)} are not among the reference's {sorted(ref)}")
    reference = [ref[k] for k in sorted(sec)]  # table 3 is table 2's runs beside other quoted numbers
    rows = {}
    for k in sorted(sec):
        a, b = ({r["row"]: r for r in t["rows"] if r["seeds_done"]} for t in (ref[k], sec[k]))
        if a.keys() != b.keys():
            raise SystemExit(f"table {k}: rows differ: {sorted(a)} against {sorted(b)}")
        for name in a:
            if a[name]["config_hash"] != b[name]["config_hash"] or a[name]["seeds"] != b[name]["seeds"]:
                raise SystemExit(f"table {k}, {name}: another configuration or seeds; not the same build")
            worst = max(abs(x - y) for kind, m in METRICS for d in DOMAINS
                        for x, y in zip(a[name]["metrics"][kind][d][m]["values"], b[name]["metrics"][kind][d][m]["values"]))
            rows[name] = max(rows.get(name, 0.0), worst)
    claims = []
    for c in verdict.CLAIMS:
        ea, eb = verdict.evidence(c, reference), verdict.evidence(c, second)
        for d in DOMAINS:
            if ea[d]["verdict"] == "not tested" or eb[d]["verdict"] == "not tested":
                continue
            claims.append({"claim": c.claim, "domain": d, "reference": ea[d]["mean"], "second": eb[d]["mean"],
                           "change": abs(ea[d]["mean"] - eb[d]["mean"]),
                           "verdicts": [ea[d]["verdict"], eb[d]["verdict"]]})
    return {"spread": max((c["change"] for c in claims), default=0.0), "claims": claims,
            "row_max_change": dict(sorted(rows.items())), "metrics": [f"{k} {m}" for k, m in METRICS]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reference", type=Path, help="tables of the default kernels (the book's)")
    ap.add_argument("second", type=Path, help="tables of the same build on the second kernels")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    reference, second = verdict.load_tables([args.reference]), verdict.load_tables([args.second])
    out = compare(reference, second)
    kernels = {name: t[0]["provenance"].get("cpu") for name, t in (("reference", reference), ("second", second))}
    out["kernels"] = kernels
    out["tables"] = {"reference": provenance.portable(args.reference), "second": provenance.portable(args.second)}
    # the compared tables' runs read the demo's embedding cache: hafvt/embed/ counts for this file
    out["provenance"] = provenance.record(kind="kernel-spread", data_hash=reference[0]["provenance"].get("data_hash"),
                                          embeddings={"from": "the compared tables' runs"})
    atomic_write_json(args.out, out)
    print(f"kernel spread: {out['spread']:.3f} (MRR x100, largest change of a claim's difference over "
          f"{len(out['claims'])} claim x domain cells); rows' largest per-seed change: "
          + ", ".join(f"{k} {v:.3f}" for k, v in out["row_max_change"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
