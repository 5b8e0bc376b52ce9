"""Helpers for the book's notebooks and build: set-up of a demo scenario with its offline encoder,
the decisions page, labels, and publishing results files next to the book.

  python -m hafvt.book prepare-demo DIR [--size small] [--encoder-epochs N] [--embed-dim E]
  python -m hafvt.book demo-encoder DIR [--epochs N] [--embed-dim E]   (``hafvt demo-encoder`` with a chosen e)
  python -m hafvt.book decisions book/decisions.md [--check]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

SMOKE_ENV = "HAFVT_SMOKE"


def smoke_from_env(default: bool = False) -> bool:
    """The notebooks' smoke switch, also settable from the environment (nbval cannot inject parameters)."""
    value = os.environ.get(SMOKE_ENV)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no")


def repo_root(start: str | Path | None = None) -> Path:
    """The repository root (the folder holding pyproject.toml), from the notebook's working directory."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "hafvt").is_dir():
            return p
    return here


def resolve(path: str | Path | None, root: Path) -> Path | None:
    if path in (None, ""):
        return None
    p = Path(path)
    return p if p.is_absolute() else root / p


def cpu_settings() -> bool:
    """Flush subnormal floats to zero on CPU (returns whether the CPU supports it).

    Measured on the demo: a HAF-VT epoch with image and title tables took 9 s, the next one 146 s
    with the same work, because training produced subnormal numbers, which x86 CPUs process
    a hundred times slower. Flushing them changes the demo's metrics by less than 1e-4.
    """
    import torch

    return bool(torch.set_flush_denormal(True))


# --------------------------------------------------------------------------- a page's set-up

# The papermill parameters every notebook declares (one parameters file per target serves them all).
PARAMETERS = ("target", "scenario", "runs", "publish", "device", "epochs", "seeds", "overrides", "rows_table2",
              "rows_table4", "grid", "grid_rows", "real_results", "smoke")


def setup_page(notebook: str, namespace: dict, banner: bool = True):
    """The set-up every page shares, from its parameters (read from ``namespace``, the notebook's globals).

    Smoke mode (``smoke`` or ``HAFVT_SMOKE=1``) swaps in a tiny demo, one epoch and one seed. Shows the
    scenario's data label (``banner=False``: a page whose numbers come from elsewhere shows its own) and
    the page's provenance; returns the derived values as attributes: ``smoke``, ``root``,
    ``scenario``/``runs``/``publish``/``real`` (paths), ``tables`` (where hafvt.reproduce writes),
    ``epochs``, ``seeds``, ``overrides`` (the runner's ``--set`` form), ``kind``, ``params``.
    """
    from types import SimpleNamespace

    import matplotlib.pyplot as plt
    from IPython.display import HTML, display

    from hafvt.data.labels import scenario_kind

    params = {k: namespace[k] for k in PARAMETERS}
    p = dict(params)
    smoke = smoke_from_env(p["smoke"])
    root = repo_root()
    cpu_settings()  # subnormal floats made some CPU epochs 15x slower; see cpu_settings
    if smoke:  # a tiny demo and one short run per row: proves the notebook runs, shows nothing worth reading
        p.update(scenario="build/smoke/demo", runs="build/smoke/runs", publish="", epochs=1, seeds=1)
        prepare_demo(root / p["scenario"], size="tiny", encoder_epochs=1, embed_dim=32, log=lambda *a: None)
    ns = SimpleNamespace(smoke=smoke, root=root, params=params, epochs=p["epochs"], seeds=p["seeds"],
                         scenario=resolve(p["scenario"], root), runs=resolve(p["runs"], root),
                         publish=resolve(p["publish"], root), real=resolve(p["real_results"], root),
                         overrides=[f"{k}={json.dumps(v)}" for k, v in p["overrides"].items()])
    ns.tables = ns.runs / "tables"  # hafvt.reproduce writes tables/table<k>.* and tables/runs/<row>/seed<k>/
    ns.runs.mkdir(parents=True, exist_ok=True)
    ns.kind = scenario_kind(ns.scenario)
    plt.rcParams.update({"figure.dpi": 96, "savefig.dpi": 96, "font.size": 9})
    if banner:
        display(HTML(label_html(ns.kind)))
    provenance_cell(notebook, params)
    return ns


# --------------------------------------------------------------------------- demo set-up


def prepare_demo(scenario_dir: str | Path, size: str = "small", seed: int = 0, encoder_epochs: int = 20,
                 embed_dim: int = 512, device: str = "cpu", log=print) -> dict:
    """Generate the demo scenario, train its offline CLIP encoder and embed its items, skipping finished steps.

    Returns a small report with the seconds each step took (0 when it was already done).
    """
    from hafvt.data.demo import write_demo
    from hafvt.embed.cache import list_caches

    cpu_settings()
    scenario_dir = Path(scenario_dir)
    report = {}
    t = time.perf_counter()
    if not (scenario_dir / "demo.json").is_file():
        write_demo(scenario_dir, size=size, seed=seed, images=True)
        log(f"demo scenario ({size}, seed {seed}) written to {scenario_dir}")
    report["demo_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    ckpt = demo_encoder_checkpoint(scenario_dir)
    if not ckpt.is_file():
        from hafvt.embed.demo_encoder import tiny_config, train_demo_encoder

        ckpt = train_demo_encoder(scenario_dir, cfg=tiny_config(embed_dim=embed_dim), epochs=encoder_epochs, seed=seed)
        log(f"demo encoder (embed_dim {embed_dim}, {encoder_epochs} epochs) saved to {ckpt}")
    report["encoder_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    if not list_caches(scenario_dir):
        from hafvt.embed.clip import embed_scenario
        from hafvt.embed.demo_encoder import DEMO_MODEL

        out = embed_scenario(scenario_dir, DEMO_MODEL, str(ckpt), device=device, workers=0)
        log(f"embeddings written to {out}")
    report["embed_s"] = round(time.perf_counter() - t, 1)
    from hafvt.embed.oracle import write_oracle_cache

    write_oracle_cache(scenario_dir)  # the latent attributes as tables: the oracle rows' bound (seconds)
    return report


def demo_encoder_checkpoint(scenario_dir: str | Path) -> Path:
    from hafvt.embed.demo_encoder import DEMO_MODEL

    return Path(scenario_dir) / "encoders" / DEMO_MODEL / f"{DEMO_MODEL}.pt"


# --------------------------------------------------------------------------- quoted numbers

# Table 1 of both papers (identical in IFCDSR and HAF-VT; papers/haf-vt.txt, "Table 1"). Quoted, not computed.
TABLE1_QUOTED = {
    "Food-Kitchen": {"items_x": 29207, "items_y": 34886, "train": 34117, "valid_x": 2722, "valid_y": 5451,
                     "test_x": 2747, "test_y": 5659, "avg_length": 9.91, "domains": ("Food", "Kitchen")},
    "Movie-Book": {"items_x": 36845, "items_y": 63937, "train": 58515, "valid_x": 2032, "valid_y": 5612,
                   "test_x": 1978, "test_y": 5730, "avg_length": 11.98, "domains": ("Movie", "Book")},
}


# --------------------------------------------------------------------------- labels


LABEL_STYLE = {"demo": ("#fff4e5", "#b35c00"), "derived": ("#fff4e5", "#b35c00"), "benchmark": ("#eef6ee", "#2e7d32"),
               "quoted": ("#f0f0f0", "#555555")}


def label_html(kind: dict, extra: str = "") -> str:
    """A banner naming what the numbers on the page come from."""
    from hafvt.viz import esc

    k = kind["kind"]
    text = {"demo": "Synthetic demo data. Every number computed on this page comes from the offline demo scenario "
                    "(and, where images or titles enter, from the small demo encoder trained on its own pairs, not "
                    "the papers' CLIP). These numbers are not comparable with the papers'.",
            "derived": "Real-data mini benchmark derived from the public C2DSR files (train = 90% of the valid users). "
                       "Not comparable with the papers' numbers.",
            "benchmark": "C2DSR benchmark files."}.get(k, kind.get("label", k))
    bg, fg = LABEL_STYLE.get(k, ("#f0f0f0", "#333"))
    return (f'<div class="hafvt-banner" style="background:{bg};border-left:4px solid {fg};padding:6px 10px;'
            f'margin:6px 0;color:#222"><b style="color:{fg}">[{esc(k)}]</b> {esc(text)} {esc(extra)}</div>')


# --------------------------------------------------------------------------- results next to the book


def publish_tables(tables_dir: str | Path, tables, dest: str | Path | None) -> list[Path]:
    """Copy ``table<k>.{json,md,tex}`` and the ``results.json`` of every run they list into ``dest``
    (same layout, so the tables' links to their runs resolve there); ``dest=None`` does nothing."""
    if dest is None:
        return []
    tables_dir, dest = Path(tables_dir), Path(dest)
    files = []
    for k in tables:
        t = json.loads((tables_dir / f"table{k}.json").read_text())
        files += [f"table{k}.{ext}" for ext in ("json", "md", "tex")] + [run for r in t["rows"] for run in r["runs"]]
    out = []
    for rel in dict.fromkeys(files):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tables_dir / rel, dest / rel)
        out.append(dest / rel)
    return out


def gain_finding(table: dict, row: str, base: str, row_name: str, base_name: str, claim: bool = True) -> str:
    """One sentence per domain comparing ``row`` with ``base`` in a table (sampled MRR), with the papers'
    quoted gain, saying in words whether our numbers agree with the paper's claim (``claim=False``: a
    comparison the papers do not make; the words then only say above or below). The rule and the
    numbers are the verdict page's (``verdict.evidence``: per-seed differences, 95% interval over seeds),
    so a comparison reads the same on every page."""
    from hafvt import verdict

    done = {r["row"]: r for r in table["rows"] if r["seeds_done"]}
    if row not in done or base not in done:
        return f"*{row_name} or {base_name} did not run on this data; no comparison.*"
    quoted = {r: (done[r]["quoted"] or {}).get("X", {}).get("mrr") for r in (row, base)}
    out = []
    if None not in quoted.values():
        out.append(f"In the paper {row_name} scores {quoted[row] - quoted[base]:+.2f} MRR points against {base_name} "
                   f"on {table['domains']['X']} (*quoted*).")
    ev = verdict.evidence(verdict.Claim("", row, base, table["table"], None, ""), [table])
    for d in ("X", "Y"):
        e = ev[d]
        words = {"supports": "**agrees with the paper's claim**" if claim else f"puts it **above** {base_name}",
                 "contradicts": "**contradicts the paper's claim**" if claim else f"puts it **below** {base_name}",
                 "inconclusive": "is **inconclusive**: the interval contains zero" + (" (no evidence either way)" if claim else "")}
        interval = ("one seed, no interval" if not math.isfinite(e["ci95"][0]) else
                    f"95% interval over seeds [{e['ci95'][0]:+.2f}, {e['ci95'][1]:+.2f}]")
        rising = f"; {', '.join(e['still_rising'])} still rising at the last epoch" if e["still_rising"] else ""
        out.append(f"Here, in domain {d} ({table['label']}), it scores {e['mean']:+.2f} points (mean of the per-seed "
                   f"differences over {e['seeds']} seeds; {interval}{rising}): this {words[e['verdict']]}.")
    return " ".join(out)


def where_it_loses(table: dict, row: str, base: str, domain: str) -> str:
    """Which slice of test targets (the table's cold-item buckets: how often the target occurs in the
    train split) makes ``row``'s sampled-MRR deficit against ``base`` in ``domain``, in words: the bucket
    whose lines x difference is the most negative, and the buckets where ``row`` is above."""
    cold = table.get("cold_items") or {}
    rows, lines = cold.get("rows", {}), cold.get("n_lines", {}).get(domain, {})
    if row not in rows or base not in rows or not lines:
        return ""
    mrr = {r: {b: v["mrr"] for b, v in rows[r]["sampled"][domain].items()} for r in (row, base)}
    diff = {b: lines[b] * (mrr[row][b] - mrr[base][b]) for b in lines if b in mrr[row] and b in mrr[base]}
    worst = min(diff, key=diff.get)
    if diff[worst] >= 0:
        return ""
    above = [b for b in diff if mrr[row][b] > mrr[base][b] and diff[b] > 0]
    share = diff[worst] / sum(v for v in diff.values() if v < 0)
    text = (f"In {table['domains'][domain]}, {share:.0%} of the deficit comes from the {lines[worst]:,} test lines whose "
            f"target occurs {worst} times in the train split (MRR {mrr[row][worst]:.2f} against {mrr[base][worst]:.2f}, "
            f"average-rank ties)")
    if above:
        text += "; it is above " + base + " on targets occurring " + " and ".join(
            f"{b} times ({mrr[row][b]:.2f} against {mrr[base][b]:.2f}, {lines[b]:,} lines)" for b in above)
    return text + "."


def ranking_disagreements(table: dict, alpha: float = 0.05) -> list[str]:
    """One sentence per paired test (``table["pairs"]``) in which the sampled ranking (target + 999
    negatives, the papers' protocol) and the full ranking (every item) order the two rows oppositely,
    each difference significant by the Wilcoxon signed-rank test at ``alpha``."""
    out = []
    for e in table.get("pairs") or []:
        s, f = e["sampled"], e["full"]
        if s["mean_difference"] * f["mean_difference"] >= 0 or max(s["wilcoxon"]["p"], f["wilcoxon"]["p"]) >= alpha:
            continue
        side = {k: "above" if e[k]["mean_difference"] > 0 else "below" for k in ("sampled", "full")}
        out.append(f"{e['pair']}, domain {e['domain']} ({s['n']:,} test lines): the sampled ranking puts "
                   f"{e['row_a']} {side['sampled']} {e['row_b']} (MRR with average-rank ties {s['mrr_a']:.2f} against {s['mrr_b']:.2f}, "
                   f"Wilcoxon p = {s['wilcoxon']['p']:.1g}), the full ranking {side['full']} it ({f['mrr_a']:.2f} "
                   f"against {f['mrr_b']:.2f}, p = {f['wilcoxon']['p']:.1g}).")
    return out


def provenance_cell(notebook: str, parameters: dict) -> dict:
    """Record how this notebook is being executed (its papermill parameters) for every results file it
    writes, and show the provenance of the page; the full record is kept in the output's metadata,
    where ``hafvt provenance check`` reads it."""
    from IPython.display import Markdown, display

    from hafvt import provenance

    target = parameters.get("target", "demo")
    provenance.set_invocation({"command": f"make notebooks TARGET={target}", "notebook": f"notebooks/{notebook}.ipynb",
                               "parameters_file": f"notebooks/params/{target}.yaml", "parameters": parameters})
    rec = provenance.record(kind="notebook")
    dirty = " (with uncommitted changes to the sources)" if rec["dirty"] else ""
    text = (f"<small>Computed from commit `{str(rec['commit'])[:10]}`{dirty}, sources `{rec['source_hash']}`, "
            f"by `{rec['command']}` ({rec['created']}). `hafvt provenance check` tells whether the current sources "
            f"still make these numbers.</small>")
    display(Markdown(text), metadata={provenance.NOTEBOOK_KEY: rec})
    return rec


def link_list(paths, page_to_static: str = "../_static") -> str:
    """HTML links to published files, relative to a notebook page of the book."""
    from hafvt.viz import esc

    items = []
    for p in paths:
        p = Path(p)
        parts = p.parts
        rel = "/".join(parts[parts.index("_static") + 1:]) if "_static" in parts else p.name
        items.append(f'<a href="{page_to_static}/{esc(rel)}">{esc(p.name)}</a>')
    return " · ".join(items)


# --------------------------------------------------------------------------- decisions page


REPRODUCIBILITY = [
    "## Repeatable numbers and what a certificate proves",
    "",
    "**Run to run on one CPU.** Until 2026-12 a CPU run with 2 threads was not bit-identical to its repeat: "
    "the gradient of an item table looked up by advanced indexing (`E[target]`, `E[seq]`) sums repeated "
    "indices with `index_put_(accumulate=True)`, which on CPU adds them with atomics across threads once the "
    "gradient has more than 32,768 elements, so the order of the additions changed from run to run (measured on "
    "the tiny demo: HAF-VT's epoch-3 loss took three different values in five repeats, 7.5925189 to 7.5925200; "
    "with one thread every repeat was identical). Every lookup now goes through `hafvt.models.lookup.rows` "
    "(`F.embedding`, a fixed order): repeats with 2 threads are bit-identical (4 of 4), and with one thread it "
    "equals the old lookup bit for bit. The numbers still depend on the thread count and on the kernel path "
    "(the CPU's ISA, ATen's capability, MKL and oneDNN limits): every record carries them (`cpu`).",
    "",
    "**Tolerances.** Tests that compare two orders of the same float32 sums (batched against one-by-one encoders, "
    "padded against short batches) bound the difference by n x eps x the tensor's largest element, with n the "
    "longest reduction; that the paths compute the same thing is shown in float64. CI runs those tests a second "
    "time on other kernels (`make test-kernels`: ATen's scalar capability, MKL and oneDNN limited to AVX2).",
    "",
    "**Digests and certificates.** A Python source is digested by its syntax tree without docstrings, so "
    "comments, docstrings and formatting never stale a result (records made before carry byte digests and are "
    "compared as bytes). A command-line result depends only on the Python sources its process had imported "
    "when the record was made (`loaded`); a module imported later in the run is missed, so records are made "
    "after the model is built. `hafvt provenance certify` probes each stale result's configurations on a tiny demo "
    "(CPU, one thread, float32, 2 epochs with an interrupt and a resume) under the recorded commit and under "
    "the current sources, and runs the command line there too (each sub-command on a tiny demo of its own, "
    "`reproduce` as the committed tables were made and resumed); it certifies only when every probe output is "
    "equal bit for bit and every changed statement ran in the probe, except statements on an error path (a "
    "block that ends in `raise`: a result that exists did not pass through it) and, for a record made before "
    "records listed their imports, statements in files that its commands import under neither tree (measured "
    "in a process of its own). A certificate proves that the probe computes the same; it does not re-run the "
    "result's own scenario, device or thread count. A change that alters only the rounding order on one device "
    "(the lookup above on CUDA, where `E[target]` already summed in a fixed order) passes when the probe, on "
    "one CPU thread, is bit-identical; non-Python sources (configs, parameters) certify only when their parsed "
    "content is unchanged, `pyproject.toml` only when its dependencies are.",
    "",
]


def decisions_markdown() -> str:
    """The book's page of reproduction decisions, generated from ``hafvt.config.decisions()``."""
    from hafvt.config import decisions

    src_names = {"paper": "stated by the papers", "protocol": "C2DSR's protocol (inferred to be the papers')",
                 "choice": "our choice (papers silent, a grid only, or a deviation)"}
    lines = [
        "# Reproduction decisions",
        "",
        "<!-- generated by `python -m hafvt.book decisions book/decisions.md` from hafvt/config.py; do not edit -->",
        "",
        "Every key of a run's configuration, with its default, where the default comes from, and why. "
        "Keys whose source is *our choice* are the places where the papers are silent and this package had to "
        "decide; each can be changed per run with `hafvt train ... --set key=value` or in a file in `configs/`. "
        "Every results file records the full configuration it ran with.",
        "",
        "*Source* says where the default comes from: **paper** only where IFCDSR or HAF-VT states the value; "
        "**protocol** where it is C2DSR's benchmark protocol — that the papers follow it is an *inference* "
        "(their Table 1 equals C2DSR's release and their baseline rows are copied from C2DSR's paper), "
        "not something they state; **choice** where the papers are silent, give only a grid of values "
        "without the one they selected, or where we deviate from the literal equations (the reason says why).",
        "",
        "## The scoring protocol",
        "",
        "Each valid/test line is one ranking in the domain of its target (its last item after a stable sort "
        "by timestamp). Sampled ranking: the target and 999 negatives drawn uniformly, with replacement, from "
        "the target's domain excluding the target, drawn once with a fixed seed and saved beside the scenario, "
        "so every model is scored on the same candidates. rank = 1 + the number of negatives scored strictly "
        "higher (ties go to the target, C2DSR's rule; every table also reports average-rank ties, and learning "
        "tests use ties against the target). MRR = mean(1/rank); NDCG@k = mean(1/log2(rank + 1)) over lines with "
        "rank <= k; HR@k = mean(rank <= k); tables print x100. Full ranking ranks the target against every item "
        "of its domain. Selection: for each domain, the test result at that domain's best validation MRR "
        "(validation every `eval_every` epochs).",
        "",
    ]
    lines += REPRODUCIBILITY
    rows = decisions()
    for source in ("choice", "paper", "protocol"):
        group = [r for r in rows if r["source"] == source]
        if not group:
            continue
        lines += [f"## {src_names[source].capitalize()}", "", "| key | default | reason |", "| --- | --- | --- |"]
        for r in group:
            default = json.dumps(r["default"]) if not isinstance(r["default"], str) else f'"{r["default"]}"'
            reason = str(r["reason"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{r['key']}` | `{default}` | {reason} |")
        lines.append("")
    lines += ["The table rows of the papers are files in `configs/` that set some of these keys "
              "(for example `configs/ifcdsr.yaml`: image and ID, hierarchical views, alpha 0.7, lambda1 0.1, lambda2 0.4).", ""]
    return "\n".join(lines)


def write_decisions(path: str | Path, check: bool = False) -> bool:
    """Write the page; with ``check``, only report whether the file on disk is up to date."""
    path = Path(path)
    text = decisions_markdown()
    if check:
        return path.is_file() and path.read_text() == text
    path.write_text(text)
    return True


# --------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hafvt.book")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare-demo", help="demo scenario + offline encoder + embeddings (skips finished steps)")
    p.add_argument("dir", type=Path)
    p.add_argument("--size", default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--encoder-epochs", type=int, default=20)
    p.add_argument("--embed-dim", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("demo-encoder", help="train the offline demo encoder with embedding size e (then: hafvt embed)")
    p.add_argument("dir", type=Path)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--embed-dim", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("decisions", help="write the decisions page from hafvt.config")
    p.add_argument("path", type=Path)
    p.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    if args.cmd == "prepare-demo":
        print(json.dumps(prepare_demo(args.dir, args.size, args.seed, args.encoder_epochs, args.embed_dim, args.device)))
        return 0
    if args.cmd == "demo-encoder":
        cpu_settings()
        from hafvt.embed.demo_encoder import DEMO_MODEL, tiny_config, train_demo_encoder

        ckpt = train_demo_encoder(args.dir, cfg=tiny_config(embed_dim=args.embed_dim), epochs=args.epochs, seed=args.seed)
        log = json.loads((ckpt.parent / "train_log.json").read_text())
        print(f"{ckpt}: e={args.embed_dim}, {log['pairs']} pairs, {log['epochs']} epochs, {log['seconds']} s, in-sample "
              f"image->title top-1 {log['image_to_title_top1_in_sample']:.3f} (chance {log['chance_top1']:.4f})")
        print(f"next: hafvt embed {args.dir} --model {DEMO_MODEL} --pretrained {ckpt}")
        return 0
    if args.cmd == "decisions":
        ok = write_decisions(args.path, check=args.check)
        if args.check and not ok:
            print(f"{args.path} is out of date; run: python -m hafvt.book decisions {args.path}", file=sys.stderr)
            return 1
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------- Sphinx extension


def _dedup_scripts(app, pagename, templatename, context, doctree):
    """sphinx-thebe registers its inline configuration script once per read phase; a page that
    declares ``const THEBE_JS_URL`` twice raises a JavaScript error. Keep the first of equal scripts."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for s in scripts:
        key = (getattr(s, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in getattr(s, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(s)
    context["script_files"][:] = kept


def _default_mode(app, config):
    """The book theme leaves pydata's ``default_mode`` empty, which the browser console reports as an error."""
    context = dict(config.html_context or {})
    context.setdefault("default_mode", "light")
    config.html_context = context


def setup(app):
    """``sphinx: extra_extensions: [hafvt.book]`` in _config.yml: small fixes for a clean console."""
    app.connect("config-inited", _default_mode)
    app.connect("html-page-context", _dedup_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
