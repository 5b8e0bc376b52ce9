"""Plots and tables for the book. Everything here draws data computed elsewhere in hafvt.

Every figure and table carries the label of its data (``hafvt.data.labels.scenario_kind``):
numbers from the demo scenario, from a derived real-data benchmark, or quoted from the papers
are never shown without saying which they are.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

DOMAIN_NAMES = {"X": "domain X", "Y": "domain Y"}
METRICS = ("mrr", "ndcg@5", "ndcg@10")
METRIC_NAMES = {"mrr": "MRR", "ndcg@5": "NDCG@5", "ndcg@10": "NDCG@10", "hr@10": "HR@10", "hr@1": "HR@1", "hr@5": "HR@5"}


def _axes(ax=None, figsize=(6, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def caption_label(kind: dict | str) -> str:
    """The short label every figure title carries: '[demo data]', '[derived real data]', ..."""
    k = kind["kind"] if isinstance(kind, dict) else kind
    return {"demo": "[synthetic demo data: not comparable with the papers]",
            "derived": "[real-data mini benchmark: not comparable with the papers]",
            "benchmark": "[C2DSR benchmark files]", "quoted": "[quoted from the paper]"}.get(k, f"[{k}]")


# --------------------------------------------------------------------------- data set


def plot_length_distribution(lengths: dict[str, dict], label: str = "", ax=None):
    """Histogram of sequence lengths per split (``hafvt.data.stats.length_distribution``)."""
    fig, ax = _axes(ax)
    splits = [s for s in ("train", "valid", "test") if s in lengths]
    width = 0.8 / max(1, len(splits))
    for k, split in enumerate(splits):
        d = {int(a): int(b) for a, b in lengths[split].items()}
        xs = np.array(sorted(d))
        total = sum(d.values())
        ax.bar(xs + (k - (len(splits) - 1) / 2) * width, [d[x] / total for x in xs], width=width,
               label=f"{split} ({total:,} lines)")
    ax.set_xlabel("items per line (history + target)")
    ax.set_ylabel("share of lines")
    ax.set_title(f"Sequence lengths {label}".strip(), fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return fig


def plot_popularity(counts: np.ndarray, n_x: int, label: str = "", names=("X", "Y"), ax=None):
    """Rank-frequency plot (log-log) of item interaction counts, one curve per domain: the long tail."""
    fig, ax = _axes(ax)
    counts = np.asarray(counts)
    for name, part in zip(names, (counts[:n_x], counts[n_x:])):
        c = np.sort(part)[::-1]
        ranks = np.arange(1, len(c) + 1)
        top = c[: max(1, len(c) // 5)].sum() / max(1, c.sum())
        ax.loglog(ranks[c > 0], c[c > 0], lw=1.8, label=f"{name}: {len(c):,} items, top 20% hold {top:.0%} of interactions")
    ax.set_xlabel("item rank by popularity")
    ax.set_ylabel("interactions")
    ax.set_title(f"Item popularity (long tail) {label}".strip(), fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    return fig


def popularity_buckets(counts: np.ndarray, edges=(0, 1, 5, 20)) -> dict[str, int]:
    """Number of items per training-count bucket (0, 1-4, 5-19, 20+), as the cold-item slice uses."""
    counts = np.asarray(counts)
    out = {}
    for lo, hi in zip(edges, list(edges[1:]) + [None]):
        name = f"{lo}+" if hi is None else (str(lo) if hi == lo + 1 else f"{lo}-{hi - 1}")
        out[name] = int(((counts >= lo) & ((counts < hi) if hi is not None else True)).sum())
    return out


# --------------------------------------------------------------------------- training


def read_jsonl(path: str | Path) -> list:
    """The records of a JSON-lines log; a torn last line (a writer killed mid-line) is dropped, a
    malformed line elsewhere is an error naming the file and line."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    out = []
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if k == len(lines):  # the last line has no newline: torn by a kill
                break
            raise ValueError(f"{path}:{k}: not a JSON line ({e.msg})") from None
    return out


def read_history(run_dir: str | Path) -> list[dict]:
    """Per-epoch log of a run: ``results.json``'s history, else ``log.jsonl`` (a run in progress)."""
    run_dir = Path(run_dir)
    res = run_dir / "results.json"
    if res.is_file():
        return json.loads(res.read_text())["history"]
    return read_jsonl(run_dir / "log.jsonl")


def plot_training_curves(histories: dict[str, list[dict]], metric: str = "mrr", label: str = ""):
    """Training loss per epoch, and validation ``metric`` per evaluation for each domain."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), layout="constrained")
    for name, hist in histories.items():
        ep = [h["epoch"] for h in hist if h.get("train_loss") is not None]
        if ep:
            axes[0].plot(ep, [h["train_loss"] for h in hist if h.get("train_loss") is not None], marker=".", label=name)
        ev = [h for h in hist if "valid" in h]
        for ax, d in zip(axes[1:], ("X", "Y")):
            if ev:
                ax.plot([h["epoch"] for h in ev], [100 * h["valid"][d][metric] for h in ev], marker="o", label=name)
    axes[0].set_title("training loss (eq. 9)", fontsize=10)
    for ax, d in zip(axes[1:], ("X", "Y")):
        ax.set_title(f"valid {METRIC_NAMES.get(metric, metric)} x100, {DOMAIN_NAMES[d]}", fontsize=10)
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(frameon=False, fontsize=8)
    if label:
        fig.suptitle(label, fontsize=9)
    return fig


# --------------------------------------------------------------------------- results tables


def fmt_mean_std(cell) -> str:
    """'9.16' for a number, '9.16 ± 0.12' for {'mean', 'std'}, '—' for None (values already x100)."""
    if cell is None:
        return "—"
    if isinstance(cell, dict):
        m, s = cell.get("mean"), cell.get("std")
        if m is None:
            return "—"
        return f"{m:.2f} ± {s:.2f}" if s is not None else f"{m:.2f}"
    return f"{float(cell):.2f}"


def side_by_side(ours: dict[str, dict], quoted: dict[str, dict] | None, domains=("X", "Y"), metrics=METRICS,
                 domain_names: dict | None = None, ours_label: str = "ours", quoted_label: str = "quoted"):
    """A DataFrame with one row per model and, per domain and metric, a 'quoted' and an 'ours' column.

    ``ours[row][domain][metric]`` is {'mean', 'std'} (x100) or a number; ``quoted`` the same with
    numbers (the papers print x100). Rows present in only one of the two show '—' in the other.
    ``quoted=None`` leaves the quoted columns out (e.g. full-ranking metrics, which the papers do not report).
    """
    import pandas as pd

    names = domain_names or {}
    sources = (ours_label,) if quoted is None else (quoted_label, ours_label)
    quoted = quoted or {}
    rows = list(dict.fromkeys([*quoted, *ours]))
    cols = pd.MultiIndex.from_tuples([(names.get(d, d), METRIC_NAMES[m], src) for d in domains for m in metrics
                                      for src in sources])
    data = []
    for r in rows:
        line = []
        for d in domains:
            for m in metrics:
                for src in sources:
                    table = quoted if src == quoted_label and src != ours_label else ours
                    line.append(fmt_mean_std(((table.get(r) or {}).get(d) or {}).get(m)))
        data.append(line)
    return pd.DataFrame(data, index=pd.Index(rows, name="model"), columns=cols)


def plot_ours_vs_quoted(ours: dict[str, dict], quoted: dict[str, dict], metric: str = "mrr", domains=("X", "Y"),
                        domain_names: dict | None = None, label: str = "", title: str = ""):
    """Horizontal bars of ``metric`` per row: ours (mean ± std over seeds) beside the quoted number."""
    import matplotlib.pyplot as plt

    names = domain_names or {}
    rows = list(dict.fromkeys([*quoted, *ours]))
    fig, axes = plt.subplots(1, len(domains), figsize=(5.5 * len(domains), 0.45 * len(rows) + 1.4),
                             layout="constrained", squeeze=False)
    y = np.arange(len(rows))
    for ax, d in zip(axes[0], domains):
        q = [((quoted.get(r) or {}).get(d) or {}).get(metric) for r in rows]
        o = [((ours.get(r) or {}).get(d) or {}).get(metric) for r in rows]
        om = [c["mean"] if isinstance(c, dict) else (c if c is not None else np.nan) for c in o]
        os_ = [c.get("std") or 0 if isinstance(c, dict) else 0 for c in o]
        ax.barh(y - 0.2, [v if v is not None else np.nan for v in q], height=0.4, color="#bbbbbb", hatch="//",
                edgecolor="#777777", label="quoted from the paper")
        ax.barh(y + 0.2, om, xerr=os_, height=0.4, color="#1f77b4", label=ours_name(label))
        ax.set_yticks(y, rows)
        ax.invert_yaxis()
        ax.set_xlabel(f"{METRIC_NAMES[metric]} x100")
        ax.set_title(names.get(d, d), fontsize=10)
    axes[0][0].legend(frameon=False, fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def ours_name(label: str) -> str:
    return f"this package {label}".strip()


# --------------------------------------------------------------------------- attention


def plot_attention(weights: dict, history_labels: list[str], title: str = "", ax=None, cmap="viridis"):
    """Heat map: one row per (view, modality), one column per history item; each row is the readout slot's
    attention over the items of its view (blank where the item is not in the view)."""
    fig, ax = _axes(ax, figsize=(max(5, 0.55 * len(history_labels) + 2.5), 0.42 * len(weights) + 1.6))
    rows = list(weights)
    mat = np.full((len(rows), len(history_labels)), np.nan)
    for i, r in enumerate(rows):
        w = np.asarray(weights[r], dtype=float)
        mat[i, : len(w)] = w
    im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", cmap=cmap, vmin=0, vmax=max(1e-9, np.nanmax(mat)))
    ax.set_yticks(range(len(rows)), [" / ".join(r) if isinstance(r, tuple) else str(r) for r in rows], fontsize=8)
    ax.set_xticks(range(len(history_labels)), history_labels, rotation=60, ha="right", fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="attention weight")
    return fig


def heat_colour(w: float, vmax: float = 1.0) -> str:
    """A CSS background for an attention weight (white -> dark blue)."""
    t = 0.0 if not np.isfinite(w) or vmax <= 0 else min(1.0, max(0.0, w / vmax))
    r, g, b = (int(255 + (c - 255) * t) for c in (8, 69, 148))
    return f"rgb({r},{g},{b})"


def esc(text) -> str:
    return html.escape(str(text), quote=True)


# --------------------------------------------------------------------------- statistics over seeds (seaborn)


def seeds_frame(table: dict, kind: str = "sampled", metric: str = "mrr"):
    """One row per (table row, domain, seed): the long form seaborn wants."""
    import pandas as pd

    recs = [{"row": r["row"], "domain": d, "seed": s, "value": v}
            for r in table["rows"] if r["seeds_done"]
            for d in ("X", "Y") for s, v in zip(r["seeds"], r["metrics"][kind][d][metric]["values"])]
    return pd.DataFrame(recs, columns=["row", "domain", "seed", "value"])


def _domain_panels(df, y: str, x: str, panel_title, size: tuple, hue: str | None = None,
                   seeds: dict | None = None, zero_line: bool = False, title: str = ""):
    """One panel per domain (X, Y) of a long-form frame: seaborn's mean and bootstrap 95% interval per
    ``y`` category (dodged by ``hue``), optionally every seed as a dot (``seeds``: stripplot options)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=size, layout="constrained", sharey=True)
    for ax, d in zip(axes, ("X", "Y")):
        part = df[df["domain"] == d]
        point = {"hue": hue, "dodge": 0.4 if seeds else 0.3} if hue else {"color": "#1f4e79"}
        sns.pointplot(data=part, y=y, x=x, errorbar=("ci", 95), linestyle="none", markers="D", ax=ax, **point)
        if seeds is not None:
            sns.stripplot(data=part, y=y, x=x, ax=ax, **seeds)
        if zero_line:
            ax.axvline(0, color="#444", lw=0.8)
        ax.set_title(panel_title(d), fontsize=9)
        ax.set_xlabel("")
        ax.set_ylabel("")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_seeds(table: dict, kind: str = "sampled", metric: str = "mrr", title: str = ""):
    """Mean and 95% interval over seeds (seaborn's bootstrap) with every seed as a point, per domain."""
    df = seeds_frame(table, kind, metric)
    return _domain_panels(df, "row", "value", lambda d: f"domain {d}: {kind} {metric.upper()} x100, mean and 95% CI over seeds (dots: seeds)",
                          (11, 0.45 * max(4, df["row"].nunique()) + 1), seeds={"color": "#d95f02", "alpha": 0.6, "size": 4}, title=title)


def plot_gains(frame, title: str = ""):
    """Per-seed differences of each claim's two rows, mean and 95% CI, by data set (hafvt.verdict.long_frame)."""
    if frame.empty:
        return None
    return _domain_panels(frame, "claim", "difference", lambda d: f"domain {d}: MRR x100 of the claim's row minus its base, per seed",
                          (12, 0.5 * frame["claim"].nunique() + 1.5), hue="data", seeds={"hue": "data", "dodge": True, "alpha": 0.5, "size": 3, "legend": False},
                          zero_line=True, title=title)


def plot_sensitivity(sens: dict):
    """Validation and test MRR of every variant (one setting changed at a time), mean and 95% CI over seeds."""
    import pandas as pd

    recs = []
    for r in sens["runs"]:
        label = "default" if r["key"] == "default" else f"{r['key']}={r['value']}"
        for d in ("X", "Y"):
            recs += [{"variant": label, "domain": d, "split": split, "mrr": r[f"{split}_{d}"]} for split in ("valid", "test")]
    df = pd.DataFrame(recs)
    return _domain_panels(df, "variant", "mrr", lambda d: f"{sens['row']}, domain {d}: sampled MRR x100 (validation chooses; test shown)",
                          (12, 0.45 * df["variant"].nunique() + 1.5), hue="split")


def ci_table(table: dict):
    """Mean and 95% t-interval over seeds of MRR x100 per row, domain and ranking, with selected epochs."""
    import pandas as pd
    from scipy import stats

    from hafvt.reproduce import selected_epochs

    def fmt(v):
        v = np.asarray(v, dtype=float)
        if len(v) < 2:
            return f"{v.mean():.2f}"
        half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        return f"{v.mean():.2f} ± {half:.2f}"

    recs = []
    for r in table["rows"]:
        if not r["seeds_done"]:
            continue
        rec = {"row": r["row"], "seeds": r["seeds_done"]}
        for kind in ("sampled", "full"):
            for d in ("X", "Y"):
                rec[f"{kind} MRR {d}"] = fmt(r["metrics"][kind][d]["mrr"]["values"])
        rec["selected epoch X / Y"] = selected_epochs(r)
        recs.append(rec)
    return pd.DataFrame(recs).set_index("row")


def plot_weight_grids(grids: list[dict], marks: dict, title: str = ""):
    """Heat maps of a metric over two fusion weights, one row per grid, one column per domain.

    ``grids``: dicts with ``x``, ``y`` (weight names), ``values_x``, ``values_y``, ``X``, ``Y`` arrays
    (rows = values_y) and optional ``names`` (domain -> name); ``marks``: label -> {weight: value},
    drawn as points where a label gives both weights of a grid (e.g. the run's weights)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(len(grids), 2, figsize=(8.4, 3.4 * len(grids)), layout="constrained", squeeze=False)
    for row, g in zip(axes, grids):
        for ax, d in zip(row, ("X", "Y")):
            z = 100 * np.asarray(g[d])
            sns.heatmap(z, ax=ax, cmap="viridis", cbar_kws={"label": "MRR x100"}, mask=~np.isfinite(z),
                        xticklabels=[f"{v:.1f}" for v in g["values_x"]], yticklabels=[f"{v:.1f}" for v in g["values_y"]])
            ax.invert_yaxis()
            ax.set_xlabel(g["x"])
            ax.set_ylabel(g["y"])
            ax.set_title(g.get("names", {}).get(d, d), fontsize=9)
            for (label, w), style in zip(marks.items(), ("o", "s", "^", "D")):
                if g["x"] in w and g["y"] in w:
                    ix = np.interp(w[g["x"]], g["values_x"], np.arange(len(g["values_x"]))) + 0.5
                    iy = np.interp(w[g["y"]], g["values_y"], np.arange(len(g["values_y"]))) + 0.5
                    ax.plot(ix, iy, style, ms=10, mfc="none", mec="white", mew=2, label=label)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper right", facecolor="0.45", labelcolor="white", framealpha=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
