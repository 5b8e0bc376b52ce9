"""An ipywidgets explorer of a trained HAF-VT model: pick a test user, see their history (item images
and titles), the attention weights of every view and modality, and the top-10 recommendations of each
modality and of the fused score (eq. 10), with the true next item marked.

Everything shown is computed by ``HAFVT.explain`` on the model of a finished run
(``RUN/checkpoint.pt``, written by ``hafvt.train.run``); nothing is re-implemented here.

Static pages: the widgets are plain ``Dropdown`` + ``HTML`` widgets whose HTML value is computed in
Python, so the notebook's saved widget state already holds the default view and the book shows it
without a kernel (``book/_static/widgets-static.js`` renders the saved state offline). Choosing
another user needs a live kernel.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from hafvt.viz import esc, heat_colour

VIEW_NAMES = {"x": "S^X (X only)", "y": "S^Y (Y only)", "xy": "S^{X+Y} (mixed)"}
MOD_NAMES = {"id": "ID", "img": "image", "tex": "title"}


@lru_cache(maxsize=8192)
def _thumb(path: str, px: int = 44) -> str:
    """A small PNG data URI of an item image ('' when there is none)."""
    if not path:
        return ""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except OSError:
        return ""
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class Explanation:
    """One test line, explained."""

    line: int
    uid: int
    history: list[int]  # item ids, oldest first
    target: int
    domain: str  # 'X' or 'Y'
    attention: dict  # (view, modality) -> weights over the history (nan where the item is not in that view)
    top: dict  # 'fused' and each modality -> list of (item, score) in the target's domain, best first
    target_rank: dict  # same keys -> rank of the true next item within its domain (1 = best)


class Explorer:
    """Loads a finished run and explains test lines with ``HAFVT.explain``."""

    def __init__(self, scenario_dir: str | Path, run_dir: str | Path, split: str = "test", k: int = 10,
                 device: str = "cpu"):
        from hafvt.config import Config
        from hafvt.data.batches import build_views
        from hafvt.data.c2dsr import read_scenario
        from hafvt.data.catalogue import read_catalogue
        from hafvt.data.labels import scenario_kind
        from hafvt.embed.images import image_file
        from hafvt.models import build_model
        from hafvt.train import load_checkpoint, load_tables

        self.scenario_dir, self.run_dir, self.k = Path(scenario_dir), Path(run_dir), k
        self.kind = scenario_kind(self.scenario_dir)
        results = json.loads((self.run_dir / "results.json").read_text())
        self.results = results
        self.cfg = Config(**results["config"]).validate()
        if self.cfg.model != "hafvt":
            raise ValueError(f"{run_dir}: the explorer needs a HAF-VT run, this one is {self.cfg.model!r}")
        self.scn = read_scenario(self.scenario_dir)
        try:
            self.catalogue = read_catalogue(self.scenario_dir)
        except FileNotFoundError:
            self.catalogue = None
        self._image_file = image_file
        tables, _ = load_tables(self.scenario_dir, self.cfg)
        self.model = build_model(self.cfg, self.scn, tables).to(device)
        ckpt = load_checkpoint(self.run_dir / "checkpoint.pt", device)
        self.model.load_state_dict(ckpt["model"])
        self.model.eval()
        self.checkpoint_epoch = ckpt["state"]["epoch"]
        self.views = build_views(self.scn.split(split), self.scn.n_x, self.scn.n_items, self.cfg.maxlen).to(device)
        self.seqs = self.scn.split(split)
        self.split = split

    def candidate_parts(self):
        """P^V_m of this model at every line's saved candidates, for re-mixing the fusion weights
        (``hafvt.fusion_weights``); the model is the checkpoint's, the candidates the run's."""
        from hafvt.candidates import load_or_draw
        from hafvt.fusion_weights import candidate_parts

        cand = load_or_draw(self.scenario_dir, self.split, self.seqs.targets, self.scn.n_x, self.scn.n_y,
                            self.cfg.n_neg, self.cfg.candidate_seed)
        return candidate_parts(self.model, self.views, torch.from_numpy(cand).to(self.views.target.device),
                               self.checkpoint_epoch)

    # ------------------------------------------------------------------ data
    def title(self, item: int) -> str:
        if self.catalogue and self.catalogue[item].get("title"):
            return self.catalogue[item]["title"]
        return f"item {item}"

    def image(self, item: int) -> str:
        if not self.catalogue:
            return ""
        path = self._image_file(self.scenario_dir, self.catalogue[item])
        return _thumb(str(path)) if path is not None else ""

    def domain_of(self, item: int) -> str:
        return "X" if item < self.scn.n_x else "Y"

    @torch.no_grad()
    def explain(self, lines: list[int]) -> list[Explanation]:
        """Explain test lines (indices into the split) in one batch."""
        from hafvt.data.batches import VIEW_INDEX

        rows = torch.as_tensor(lines, dtype=torch.long, device=self.views.target.device)
        batch = self.views.index(rows)
        out = self.model.explain(batch)
        cfg, n_x = self.cfg, self.scn.n_x
        L = cfg.maxlen
        l1, l2 = cfg.lambda1, cfg.lambda2
        result = []
        for b, line in enumerate(lines):
            seq = batch["seq"][b, VIEW_INDEX["xy"]].cpu().numpy()
            real = batch["pos"][b, VIEW_INDEX["xy"]].cpu().numpy() > 0
            slots = np.flatnonzero(real)
            history = [int(i) for i in seq[slots]]
            target = int(batch["target"][b])
            dom = int(batch["domain"][b])
            attention = {}
            for (v, m), per_block in out["attention"].items():
                w = per_block[-1][b].mean(0)  # last block, mean over heads: (L, L)
                if cfg.readout == "last_slot" or v == "xy":
                    slot = L - 1
                else:
                    slot = int(batch["last"][b, VIEW_INDEX[v]])
                in_view = batch["pos"][b, VIEW_INDEX[v]].cpu().numpy() > 0
                row = w[slot].cpu().numpy().astype(float)
                attention[(v, m)] = [float(row[s]) if in_view[s] else float("nan") for s in slots]
            # per-modality scores combined over views as eq. (10) combines P^V, and the fused score itself
            lo, hi = (0, n_x) if dom == 0 else (n_x, self.scn.n_items)
            scores = {}
            for m in self.model.modalities:
                P = {v: out["modality_probs"][(v, m)][b] for v in self.model.views}
                if self.model.views == ("xy",):
                    s = P["xy"]
                else:
                    own, other = ("x", "y") if dom == 0 else ("y", "x")
                    s = P[own] + l1 * P[other] + l2 * P["xy"]
                scores[m] = s[lo:hi]
            scores["fused"] = out["fused"][b, lo:hi]
            top, rank = {}, {}
            for key, s in scores.items():
                s = s.double()
                order = torch.argsort(s, descending=True, stable=True)[: self.k]
                top[key] = [(int(i) + lo, float(s[i])) for i in order]
                rank[key] = int(1 + (s > s[target - lo]).sum())
            result.append(Explanation(line=int(line), uid=int(self.seqs.uid[line]), history=history, target=target,
                                      domain="X" if dom == 0 else "Y", attention=attention, top=top, target_rank=rank))
        return result

    def pick_default(self, candidates: int = 200) -> int:
        """A test line worth showing first: history in both domains and the true next item in the fused top-k."""
        lines = list(range(min(candidates, len(self.seqs))))
        best, best_key = lines[0], None
        for e in self.explain(lines):
            doms = {self.domain_of(i) for i in e.history}
            key = (len(doms) == 2, e.target_rank["fused"] <= self.k, -e.target_rank["fused"], len(e.history))
            if best_key is None or key > best_key:
                best, best_key = e.line, key
        return best

    # ------------------------------------------------------------------ HTML
    def _item_card(self, item: int, mark: bool = False, score: float | None = None, extra: str = "") -> str:
        img = self.image(item)
        pic = f'<img src="{img}" alt="item {item}" width="44" height="44">' if img else '<div class="hafvt-noimg">no image</div>'
        cls = "hafvt-card hafvt-target" if mark else "hafvt-card"
        star = '<div class="hafvt-mark">★ true next item</div>' if mark else ""
        sc = f'<div class="hafvt-score">{score:.3g}</div>' if score is not None else ""
        return (f'<div class="{cls}" title="{esc(self.title(item))} (item {item}, domain {self.domain_of(item)})">{pic}'
                f'<div class="hafvt-title">{esc(self.title(item))}</div><div class="hafvt-dom">{self.domain_of(item)} · #{item}</div>'
                f'{sc}{extra}{star}</div>')

    def render(self, e: Explanation) -> str:
        """The whole view for one explained line, as self-contained HTML (inline thumbnails and styles)."""
        label = {"demo": "synthetic demo data — not comparable with the papers",
                 "derived": "real-data mini benchmark — not comparable with the papers"}.get(self.kind["kind"], self.kind["label"])
        parts = [STYLE, '<div class="hafvt-explorer">',
                 f'<p class="hafvt-label">[{esc(label)}] model: <code>{esc(self.cfg.name)}</code>, run '
                 f'<code>{esc(self.run_dir.name)}</code>, checkpoint of epoch {self.checkpoint_epoch}; {self.split} line {e.line}, '
                 f'user {e.uid}; target domain {e.domain}.</p>']
        # history
        parts.append('<h4>History (oldest → newest) and the true next item</h4><div class="hafvt-row">')
        parts += [self._item_card(i) for i in e.history]
        parts.append('<div class="hafvt-arrow">→</div>' + self._item_card(e.target, mark=True) + "</div>")
        # attention
        vmax = max([w for ws in e.attention.values() for w in ws if np.isfinite(w)] or [1.0])
        parts.append("<h4>Attention of the read-out position over the history, per view and modality</h4>"
                     '<table class="hafvt-attn"><thead><tr><th>view / modality</th>')
        parts += [f'<th title="{esc(self.title(i))}">{k + 1}<br><span class="hafvt-dom">{self.domain_of(i)}</span></th>'
                  for k, i in enumerate(e.history)]
        parts.append("</tr></thead><tbody>")
        for (v, m), ws in e.attention.items():
            cells = "".join(
                '<td class="hafvt-na">·</td>' if not np.isfinite(w) else
                f'<td style="background:{heat_colour(w, vmax)};color:{"#fff" if w > 0.55 * vmax else "#000"}">{w:.2f}</td>'
                for w in ws)
            parts.append(f"<tr><th>{esc(VIEW_NAMES[v])} / {esc(MOD_NAMES[m])}</th>{cells}</tr>")
        parts.append("</tbody></table><p class=\"hafvt-note\">Each row is the last block's attention (mean over heads) "
                     "of the view's read-out position; '·' marks items outside that view.</p>")
        # recommendations
        parts.append(f"<h4>Top-{self.k} recommendations in domain {e.domain}, per modality and fused (eq. 10)</h4>")
        for key in [*[m for m in self.model.modalities], "fused"]:
            name = "fused (eq. 10)" if key == "fused" else f"{MOD_NAMES[key]} only"
            rank = e.target_rank[key]
            parts.append(f'<div class="hafvt-reclabel">{esc(name)} — true next item ranked {rank:,} of '
                         f'{self.scn.n_x if e.domain == "X" else self.scn.n_y:,}</div><div class="hafvt-row">')
            parts += [self._item_card(i, mark=i == e.target, score=s) for i, s in e.top[key]]
            parts.append("</div>")
        parts.append("</div>")
        return "".join(parts)

    # ------------------------------------------------------------------ widget
    def widget(self, lines: list[int] | None = None, default: int | None = None):
        """A Dropdown of test lines and an HTML view; the default view is computed now (static books show it)."""
        import ipywidgets as W

        lines = list(lines) if lines is not None else list(range(min(50, len(self.seqs))))
        default = self.pick_default() if default is None else default
        if default not in lines:
            lines = [default, *lines]
        options = [(f"line {i}: user {int(self.seqs.uid[i])}, next item in {self.domain_of(int(self.seqs.targets[i]))}", i)
                   for i in lines]
        pick = W.Dropdown(options=options, value=default, description="test line", style={"description_width": "initial"},
                          layout=W.Layout(width="28em"))
        view = W.HTML(self.render(self.explain([default])[0]))

        def on_change(change):
            view.value = self.render(self.explain([change["new"]])[0])

        pick.observe(on_change, names="value")
        return W.VBox([pick, view])



def fusion_weights_widget(parts, seqs, line: int, names=("X", "Y")):
    """Sliders for alpha, beta (eq. 7) and lambda1, lambda2 (eq. 10) re-mixing a trained model's saved
    probabilities (``hafvt.fusion_weights``): sampled MRR / NDCG per domain and the rank of one test
    line's target, at the chosen weights beside the run's. Weights that do not act on the run's
    configuration are disabled."""
    import ipywidgets as W

    from hafvt.fusion_weights import WEIGHTS, remix_metrics, target_ranks

    run_w = parts.weights()
    base, base_rank = remix_metrics(parts), target_ranks(parts)
    acting = parts.acting()
    sliders = {k: W.FloatSlider(value=run_w[k], min=0.0, max=1.0, step=0.05, description=k, disabled=k not in acting,
                                continuous_update=False, readout_format=".2f") for k in WEIGHTS}
    pick = W.BoundedIntText(value=line, min=0, max=len(seqs) - 1, description="test line")
    view = W.HTML()

    def render(_=None):
        w = {k: s.value for k, s in sliders.items()}
        try:
            m, ranks = remix_metrics(parts, **w), target_ranks(parts, **w)
        except ValueError as err:  # alpha + beta > 1: no mixture
            view.value = f"<p class='hafvt-note'>{esc(err)}</p>"
            return
        rows = "".join(
            f"<tr><th>{esc(names[i])} ({d})</th>" + "".join(
                f"<td>{100 * m[d][k]:.2f}</td><td class='hafvt-na'>{100 * base[d][k]:.2f}</td>" for k in ("mrr", "ndcg@5", "ndcg@10"))
            + "</tr>" for i, d in enumerate(("X", "Y")))
        i = pick.value
        n_cand = parts.probs[next(iter(parts.probs))].shape[1]
        view.value = (STYLE + "<div class='hafvt-explorer'><table class='hafvt-attn'><thead><tr><th></th>"
                      + "".join(f"<th>{k} here</th><th>at run's weights</th>" for k in ("MRR", "NDCG@5", "NDCG@10"))
                      + f"</tr></thead><tbody>{rows}</tbody></table>"
                      f"<p>test line {i} (user {int(seqs.uid[i])}): its next item ranks <b>{int(ranks[i])}</b> of {n_cand} "
                      f"candidates here, {int(base_rank[i])} at the run's weights (x100, sampled metrics, "
                      f"model of epoch {parts.epoch}).</p></div>")

    for s in (*sliders.values(), pick):
        s.observe(render, names="value")
    render()
    return W.VBox([W.HBox([sliders["alpha"], sliders["beta"]]), W.HBox([sliders["lambda1"], sliders["lambda2"]]), pick, view])


STYLE = """<style>
.hafvt-explorer{font-size:13px;line-height:1.3}
.hafvt-explorer h4{margin:.8em 0 .3em;font-size:14px}
.hafvt-row{display:flex;flex-wrap:wrap;gap:4px;align-items:flex-start}
.hafvt-card{width:76px;border:1px solid #ccc;border-radius:4px;padding:3px;text-align:center;background:#fff}
.hafvt-card img{display:block;margin:0 auto;image-rendering:pixelated}
.hafvt-target{border:3px solid #d62728;background:#fff3f3}
.hafvt-title{font-size:10px;overflow-wrap:anywhere;color:#222}
.hafvt-dom,.hafvt-score{font-size:9px;color:#666}
.hafvt-mark{font-size:9px;color:#d62728;font-weight:bold}
.hafvt-noimg{width:44px;height:44px;margin:0 auto;font-size:9px;color:#999;border:1px dashed #ccc}
.hafvt-arrow{font-size:24px;align-self:center;padding:0 4px}
table.hafvt-attn{border-collapse:collapse;font-size:11px}
table.hafvt-attn td,table.hafvt-attn th{border:1px solid #ddd;padding:2px 5px;text-align:center}
table.hafvt-attn tbody th{text-align:left;white-space:nowrap}
.hafvt-na{color:#bbb}
.hafvt-reclabel{margin-top:.4em;font-weight:bold;font-size:12px}
.hafvt-label,.hafvt-note{color:#555;font-size:12px}
</style>"""
