"""One configuration per run: a dataclass plus a YAML file in ``configs/``.

Every field carries where its default comes from: ``paper`` (the value is stated by IFCDSR or
HAF-VT; the reason says which), ``protocol`` (C2DSR's benchmark protocol, which the papers are
*inferred* to follow: their Table 1 matches C2DSR's release) or ``choice`` (the papers are silent,
give only a grid, or we deviate from them; the reason says why). The book's list of reproduction
decisions is built from this.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import yaml


def _f(default, source: str, reason: str):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"source": source, "reason": reason})
    return field(default=default, metadata={"source": source, "reason": reason})


MODALITIES = ("id", "img", "tex")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile modes
VIEWS = ("x", "y", "xy")


@dataclass
class Config:
    name: str = _f("hafvt", "choice", "Name of the table row this configuration reproduces.")
    model: str = _f("hafvt", "choice", "Model family: 'hafvt' (IFCDSR is its id+img case), 'popularity', or a baseline.")
    # --- what the model sees (HAF-VT Table 4 rows are settings of these two keys)
    modalities: list = _f(["id", "img", "tex"], "paper", "E_id, E_img and E_tex of HAF-VT; IFCDSR uses id and img.")
    views: str = _f("hierarchical", "choice",
                    "'hierarchical' = separate encoders for S^X, S^Y, S^{X+Y}; 'merged' = Table 4's 'original "
                    "framework': one encoder over S^{X+Y} only, P = P^{X+Y} (IFCDSR: 'all sequences combined into a single representation').")
    # --- sizes
    q: int = _f(256, "paper", "Learnable ID embedding size q.")
    maxlen: int = _f(15, "protocol", "History length of the Amazon scenarios (C2DSR).")
    # --- equation weights
    alpha: float = _f(0.6, "choice", "HAF-VT gives no alpha; IFCDSR's 0.7 is for ID against one side modality, with two the ID keeps a majority and the rest is split evenly (beta 0.2, text 0.2).")
    beta: float = _f(0.2, "choice", "HAF-VT gives no beta; see alpha.")
    lambda1: float = _f(0.1, "paper", "Stated by IFCDSR (0.1); HAF-VT gives no value, so its rows use IFCDSR's.")
    lambda2: float = _f(0.4, "paper", "Stated by IFCDSR (0.4); HAF-VT gives no value, so its rows use IFCDSR's.")
    loss_form: str = _f("paper", "choice",
                        "'paper' = L^X + l1 L^Y + l2 L^{X+Y} as eq. 9 writes it; 'symmetric' adds the role-swapped loss for Y targets (L^Y + l1 L^X + l2 L^{X+Y}).")
    # --- scoring
    temperature: float = _f(0.1, "choice", "Deviation from eqs. 2 and 4-6, which apply the softmax to the plain cosine (no temperature): a cosine in [-1, 1] over 30k-100k items gives an almost flat softmax; dividing by 0.1 spreads it. A cosine cannot express an item-popularity prior the way a dot product can.")
    view_softmax: str = _f("all", "choice", "Deviation from eqs. 4-6, where the view X's softmax runs over E^X (the X items): eq. 10 adds lambda1 P^Y(x) for an X item x, which needs P^Y defined on X items, so every view's softmax runs over all items of X and Y. 'domain' is the literal reading (S^X over X items, S^Y over Y items; then P^Y(x) = 0).")
    readout: str = _f("last_item", "choice", "The X-only view reads its last X item (as C2DSR's x_last_id), not its last slot, which is padding when the last item is in Y; 'last_slot' reads the slot.")
    # --- encoder
    n_blocks: int = _f(1, "choice", "Attention depth: the papers show one attention layer per view and modality (Fig. 3).")
    n_heads: int = _f(1, "choice", "Attention heads: eq. 3 is single-head.")
    positional: str = _f("learned", "choice", "Learned positional embeddings as in SASRec/C2DSR ('none' disables them).")
    dropout: float = _f(0.3, "paper", "Dropout rate of both papers.")
    # --- training
    train_targets: str = _f("all_positions", "choice", "Every position of a training line is a next-item target (the papers do not say); C2DSR's code trains on the last 10 positions of each line (so does the C2DSR baseline, inside the targets this key gives). 'last' trains on the last position only.")
    lr: float = _f(1e-3, "choice", "The papers give a grid {1e-3, 5e-4, 1e-4}, not the value they selected; 1e-3 is our pick unless the grid is searched.")
    l2: float = _f(1e-5, "choice", "The papers give a grid {1e-4, 5e-5, 1e-5} (L2 regularisation, here Adam weight decay), not the value they selected; 1e-5 is our pick unless the grid is searched.")
    batch_size: int = _f(256, "paper", "Mini-batch size of both papers.")
    epochs: int = _f(100, "paper", "Training epochs of both papers.")
    eval_every: int = _f(5, "protocol", "C2DSR's code validates every 5 epochs (the papers do not say).")
    patience: int = _f(4, "choice", "Stop after this many evaluations in which neither domain's validation MRR improved, and keep each domain's best (0 = train all epochs). The papers train 100 epochs and report the best validation epoch; patience selects the same epoch unless the curve recovers later, and lets a table set a generous epoch budget so that no row is reported while its curve still rises.")
    amp: bool = _f(True, "choice", "bf16 autocast on CUDA (ignored on CPU).")
    compile: bool = _f(False, "choice", "torch.compile the encoders (CUDA only).")
    compile_mode: str = _f("default", "choice", "torch.compile's mode for the encoders when compile is on: 'default', 'reduce-overhead' (CUDA graphs: one replay instead of a launch per kernel; needs the fixed shapes that pad_last_batch gives), 'max-autotune' or 'max-autotune-no-cudagraphs'. Speed only: the same numbers up to float rounding.")
    pad_last_batch: bool = _f(True, "choice", "The last, short training batch of an epoch is filled up to batch_size with lines that hold no target: its loss and gradients are the short batch's (the loss averages over real targets) and a compiled model sees one shape all epoch (no recompilation). With dropout the masks are drawn over the padded batch, so the draws differ from an unpadded run's. Every training line counts either way.")
    batched_encoders: bool = _f(False, "choice", "Run the view x modality encoders of one width (HAF-VT's nine when q = e) as one batched pass, their parameters stacked (hafvt.models.attention.run_stacked), instead of one after another. The same numbers up to float rounding (tests compare loss, gradients and attention weights); with dropout the masks are drawn in another order. Off by default: on the 2-core CPU an epoch took 1.06-1.09x as long batched (demo, q = e = 64); on a GPU it saves kernel launches (README, Speed).")
    # --- evaluation
    n_neg: int = _f(999, "protocol", "999 uniform negatives per test line (C2DSR's protocol; the papers' baseline rows are copied from C2DSR's paper, so we infer they score the same way).")
    candidate_seed: int = _f(0, "protocol", "Candidates are drawn once with this seed and saved beside the scenario.")
    tie: str = _f("target", "protocol", "C2DSR's rule: a tied negative ranks below the target. 'average' is reported beside it.")
    # --- inputs
    embeddings: str = _f("", "choice", "Name of the embedding cache in <scenario>/embeddings/ ('' = the only one present).")
    # --- baselines (ignored by hafvt)
    hidden: int = _f(256, "choice", "Hidden size of the baselines.")
    transitions_k: int = _f(3, "choice", "Transition baseline: count transitions from the last k history items.")
    psjnet_k: int = _f(4, "choice", "PSJNet baseline: number K of latent user roles its split unit divides each domain's state into (the paper's K; it tunes K per data set, 4 is the default of the authors' pi-Net code). The C2DSR files have one user per line, so the roles are latent sub-profiles. Read by no other model.")
    # Tri-CDR baseline (hafvt/models/baselines/tricdr.py); ignored by every other model
    tricdr_cl_weight: float = _f(0.1, "choice", "Tri-CDR: weight of the coarse-grained triple contrastive loss (InfoNCE over the pairs mixed-source, mixed-target, source-target). The paper tunes it per dataset; 0.1 is its public code's Game->Toy setting, not searched here.")
    tricdr_triplet_weight: float = _f(1.0, "choice", "Tri-CDR: weight of the fine-grained triple contrastive loss (triplet margin: source anchor, mixed positive, target negative). The paper tunes it per dataset (public code: 10 and 5 on Toy/Game); with 10 and margin 4 this harness's Tri-CDR did not learn the deterministic chain test (lr 1e-2, 20 epochs: HR@1 0.44 / 0.34), with 1 and margin 1 it does. Not searched on real data.")
    tricdr_margin: float = _f(1.0, "choice", "Tri-CDR: margin of the fine-grained triplet loss, in Euclidean distance between the projected (unnormalised) representations. The paper tunes it per dataset (public code: 4 and 20); 1 here, see tricdr_triplet_weight.")
    mifn_neighbors: int = _f(10, "choice", "MIFN baseline: the C2DSR files have no knowledge graph, so MIFN's is replaced by the training lines' co-occurrence graph; each item keeps its k most frequent co-occurring items, and a line's subgraph is its history items plus their k neighbours each (MIFN samples 200 nodes from Amazon metadata relations).")

    # ------------------------------------------------------------------ helpers
    def validate(self) -> "Config":
        """Every key's type and range (``RANGES``), the choices of the string keys, the modality weights."""
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), type(f.default) if f.default is not MISSING else list)
        for key, rule in RANGES.items():
            value = getattr(self, key)
            for op, bound in rule:
                if not _OPS[op](value, bound):
                    raise ValueError(f"config key {key} must be {' and '.join(f'{o} {b:g}' for o, b in rule)}, got {value:g}")
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {self.modalities}")
        for key, allowed in (("views", ("merged", "hierarchical")), ("loss_form", ("paper", "symmetric")),
                             ("view_softmax", ("all", "domain")), ("readout", ("last_item", "last_slot")),
                             ("positional", ("learned", "none")), ("train_targets", ("all_positions", "last")),
                             ("tie", ("target", "average", "against")), ("compile_mode", COMPILE_MODES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.model == "hafvt":
            try:
                w = modality_weights(self)
            except ZeroDivisionError:  # image + text without id, alpha = 1
                w = {"img": math.nan, "tex": math.nan}
            # eq. (7) is a mixture: every weight > 0 (a zero weight puts log 0 in the loss; drop the modality instead)
            bad = {m: x for m, x in w.items() if not x > 1e-9}
            if bad:
                raise ValueError(f"alpha={self.alpha}, beta={self.beta} give modality weights {w} for {self.modalities}; "
                                 f"each must be > 0 (non-positive: {sorted(bad)})")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def view_names(self) -> tuple[str, ...]:
        return ("xy",) if self.views == "merged" else VIEWS


# The allowed range of every numeric key (a zero q, n_neg or temperature gave perfect or undefined scores);
# alpha and beta are bounded by the modality weights they give (each > 0, checked in validate).
RANGES = {k: (rule,) if isinstance(rule[0], str) else rule for k, rule in {
    **dict.fromkeys(("q", "maxlen", "n_blocks", "n_heads", "batch_size", "epochs", "eval_every", "n_neg", "hidden",
                     "transitions_k", "psjnet_k", "mifn_neighbors"), (">=", 1)),
    **dict.fromkeys(("patience", "candidate_seed", "lambda1", "lambda2", "lr", "l2", "tricdr_cl_weight",
                     "tricdr_triplet_weight", "tricdr_margin"), (">=", 0)),
    "dropout": ((">=", 0), ("<", 1)),
    "temperature": (">", 0),
}.items()}
_OPS = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}


def _check_type(key: str, value, t: type) -> None:
    ok = isinstance(value, t) and not (t is int and isinstance(value, bool))
    if t is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise ValueError(f"config key {key}: expected {_TYPE_NAMES[t]}, got {value!r}")


def modality_weights(cfg: Config) -> dict[str, float]:
    """alpha/beta of eq. 7 (HAF-VT) or eq. 5 (IFCDSR) for the chosen modalities."""
    mods = list(cfg.modalities)
    if mods == ["id"] or len(mods) == 1:
        return {mods[0]: 1.0}
    if set(mods) == {"id", "img", "tex"}:
        return {"id": cfg.alpha, "img": cfg.beta, "tex": 1.0 - cfg.alpha - cfg.beta}
    if "id" in mods:  # id + one side modality: alpha and 1 - alpha (IFCDSR eq. 5)
        other = [m for m in mods if m != "id"][0]
        return {"id": cfg.alpha, other: 1.0 - cfg.alpha}
    return {"img": cfg.beta / (1 - cfg.alpha), "tex": (1 - cfg.alpha - cfg.beta) / (1 - cfg.alpha)}


def parse_value(text: str):
    """``--set key=value`` values are YAML scalars or lists."""
    return yaml.safe_load(text)


def read_yaml_mapping(path: Path) -> dict:
    """A YAML file that must hold one mapping (a config, a parameters file); a syntax error names its line."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got a {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Read a YAML config (unknown keys are an error, naming the file) and apply overrides."""
    data = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = read_yaml_mapping(path)
        data.setdefault("name", path.stem)
    known = {f.name for f in fields(Config)}
    over = dict(overrides) if isinstance(overrides, dict) else {}
    for item in [] if isinstance(overrides, dict) else overrides or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        over[key.strip()] = parse_value(value)
    for where, keys in ((path, data), ("--set", over)):
        unknown = sorted(set(keys) - known)
        if unknown:
            raise ValueError(f"{where}: unknown config key(s): {', '.join(unknown)}")
    data.update(over)
    return Config(**_coerce(data)).validate()


def _coerce(data: dict) -> dict:
    """Numbers given as text (YAML reads ``1e-5`` as a string) become the field's type."""
    types = {f.name: type(f.default) for f in fields(Config) if f.default is not MISSING}
    out = dict(data)
    for k, v in data.items():
        t = types.get(k)
        if t in (int, float) and isinstance(v, (str, int)) and not isinstance(v, bool):
            try:
                out[k] = t(v)
            except ValueError:
                raise ValueError(f"config key {k}: expected a number, got {v!r}") from None
    return out


# Choices made outside a run's configuration: in the model's code and the data and embedding commands.
OTHER_DECISIONS = [
    {"key": "loss reduction", "default": "mean per view", "source": "choice",
     "reason": "Eq. 8 sums -log P over a view's targets; we average per view so that lambda1, lambda2 weigh views, not their lengths."},
    {"key": "attention block", "default": "pre-LN, ReLU feed-forward", "source": "choice",
     "reason": "The papers show 'attention layers' only; we use SASRec's block (hafvt/models/attention.py), shared with the SASRec and C2DSR baselines."},
    {"key": "hafvt embed --model", "default": "ViT-B-32", "source": "choice",
     "reason": "The papers say 'frozen CLIP' with e = 512; ViT-B/32 and ViT-B/16 both give 512; B/32 is the cheaper and the original CLIP's common choice. Any open_clip name can be passed."},
    {"key": "missing image or title", "default": "other modality, then domain mean", "source": "choice",
     "reason": "An item without an image gets its title's CLIP text row (one embedding space); without a title, its image row; with neither, its domain's mean row. The manifest counts each case."},
    {"key": "C2DSR baseline", "default": "the authors' model: 3 tables and graphs, untied heads, last 10 slots, 0.7 / 0.3", "source": "choice",
     "reason": "Rebuilt after the authors' code (cjx96/C2DSR); it was one symmetric graph shared by the three views, scores tied to the item table, cross-entropy at every slot and infomax weight 0.1 on last slots. Now: mixed, X-only and Y-only item tables, each with its own one-layer GCN over a directed, binary, row-normalised (D^-1 A) graph of consecutive items in the training lines (mixed, or filtered to the domain; no self-loops); encoder input (GCN + table) x sqrt(d); 2 attention blocks, dropout 0.2 (configs/c2dsr.yaml); linear heads lin_X, lin_Y plus a PAD class; loss 0.7 x (shared CE X, Y on the mixed states + specific CE X, Y on mixed + single-domain states, last 10 slots) + 0.3 x (infomax X, Y: bilinear discriminator, BCE, masked means over target slots, corrupted mixed line as negative), the code's defaults; scoring by the specific representation. Still simplified: the harness's pre-LN attention block, N(0, 0.02) tables, the corruption redrawn per batch, the harness's views, targets and optimiser (hafvt/models/baselines/c2dsr.py)."},
    {"key": "PSJNet baseline", "default": "PSJNet-II, K = psjnet_k latent roles, attention join", "source": "choice",
     "reason": "Simplified against PSJNet (Sun et al., TKDE): the C2DSR files have no shared accounts, so the K roles of its split unit are latent; the split gate follows the authors' pi-Net code without recurrence, the join is a dot-product attention over every (timestamp, role) part before the predicted item, the output layer is tied to the item table (hafvt/models/baselines/psjnet.py)."},
    {"key": "MIFN baseline", "default": "co-occurrence graph for the knowledge graph, K = mifn_neighbors", "source": "choice",
     "reason": "Simplified against MIFN (Ma et al., TKDD): the C2DSR files have no knowledge graph, so its graph is the training lines' item co-occurrence (each item's K most frequent neighbours, train split only); the knowledge transfer unit is one line-independent propagation plus per-slot attention read-outs and a gate; one target per slot routed to its domain's decoder, the sequence/graph switch kept (hafvt/models/baselines/mifn.py)."},
    {"key": "Tri-CDR baseline", "default": "one model for both directions, cosine / 0.2, TCL on the last slot", "source": "choice",
     "reason": "Simplified against Tri-CDR: one model scores both domains (roles source/target follow each example's target domain; the paper trains one model per direction), one item table shared by the three SASRec encoders, trained from scratch, softmax cross-entropy over the target domain at every slot with a target (the paper: BCE with one sampled negative), cosine scores / temperature 0.2 (the public code's x5), triple contrastive loss on each line's last slot (hafvt/models/baselines/tricdr.py)."},
    {"key": "GRU4Rec / SASRec / SR-GNN loss", "default": "softmax cross-entropy over all items", "source": "choice",
     "reason": "Every baseline is trained with full softmax cross-entropy at every slot with a target, on the merged sequence S^{X+Y}, with the output tied to the item table: GRU4Rec's paper uses session-parallel batches with sampled BPR/TOP1 losses, SASRec's binary cross-entropy with one sampled negative."},
    {"key": "hafvt catalogue build --max-len", "default": 15, "source": "choice",
     "reason": "How a user's history becomes sequences is not stated: windows of 15 items ending at the newest (C2DSR's maxlen)."},
]


def decisions() -> list[dict]:
    """Every key with its default, source and reason (for the book's decisions page)."""
    keys = [{"key": f.name, "default": f.default if f.default is not MISSING else f.default_factory(),
             "source": f.metadata["source"], "reason": f.metadata["reason"]} for f in fields(Config)]
    return keys + OTHER_DECISIONS
