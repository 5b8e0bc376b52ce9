"""Train and score one configuration on one scenario; write ``RUN/results.json``.

The data lives on the device; batches are index slices, and the number of target slots of a
batch is known on the host, so the inner loop never waits for the GPU. Every ``eval_every``
epochs the valid and test splits are scored; for each domain the test result at that
domain's best validation MRR is reported (C2DSR's selection rule). A checkpoint after each
evaluation lets an interrupted run resume and end with the same metrics.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hafvt import distributed
from hafvt.candidates import candidates_path, load_or_draw
from hafvt.config import Config
from hafvt.data.batches import VIEW_INDEX, Views, scenario_views
from hafvt.data.c2dsr import Scenario, read_scenario
from hafvt.io import (append_line, atomic_save_npz, atomic_torch_save, atomic_write_json, atomic_write_text, exclusive,
                      remove_stale_temps)
from hafvt.metrics import metrics_from_ranks, per_domain, ranks_from_counts
from hafvt.models import build_model, needs_tables
from hafvt.provenance import _changed, run_provenance

REPORTED_TIES = ("target", "average")


# --------------------------------------------------------------------------- scoring


@torch.no_grad()
def rank_split(model, views: Views, candidates: torch.Tensor, n_x: int, batch_size: int | None = None,
               ties: tuple = REPORTED_TIES) -> dict:
    """Ranks of every line's target: sampled (its candidates) and full (its whole domain), per tie policy.

    Counts of items above and tied with the target are gathered on the device for every batch and
    brought to the host once; other-domain columns are masked out rather than sliced, so no batch
    waits on a host sync. Ranks equal ``metrics.full_ranks`` / ``sampled_ranks`` on the same scores.
    ``batch_size``: 256 on CPU, 1024 on a GPU.
    """
    model.eval()
    dev = views.target.device
    batch_size = batch_size or (256 if dev.type == "cpu" else 1024)
    counts = {k: [] for k in ("s_gt", "s_eq", "f_gt", "f_eq")}
    nan = torch.zeros((), dtype=torch.bool, device=dev)
    for start in range(0, len(views), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(views)), device=dev)
        batch = views.index(rows)
        P = model.scores(batch)
        nan |= torch.isnan(P).any()
        cand = P.gather(1, candidates[rows])  # column 0 is the target
        counts["s_gt"].append((cand[:, 1:] > cand[:, :1]).sum(1))
        counts["s_eq"].append((cand[:, 1:] == cand[:, :1]).sum(1))
        in_y = torch.arange(P.shape[1], device=dev) >= n_x
        P = P.masked_fill(in_y[None, :] != batch["domain"].bool()[:, None], float("-inf"))  # the target's domain only
        t = P.gather(1, batch["target"][:, None])
        counts["f_gt"].append((P > t).sum(1))
        counts["f_eq"].append((P == t).sum(1) - 1)  # the target equals itself
    if bool(nan):
        raise ValueError("scores contain NaN")
    c = {k: torch.cat(v).cpu() for k, v in counts.items()}
    return {(kind, tie): ranks_from_counts(c[f"{kind[0]}_gt"], c[f"{kind[0]}_eq"], tie).numpy()
            for kind in ("sampled", "full") for tie in ties}


def metrics_of(ranks: dict, domain: np.ndarray, tie: str) -> dict:
    d = torch.from_numpy(domain)
    return {kind: per_domain(torch.from_numpy(ranks[(kind, tie)]), d) for kind in ("sampled", "full")}


# --------------------------------------------------------------------------- training


def _seed_epoch(seed: int, epoch: int) -> np.random.Generator:
    torch.manual_seed(seed * 1_000_003 + epoch)
    return np.random.default_rng([seed, epoch])


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compile_model(model, cfg: Config) -> None:
    """torch.compile the model's encoders in ``cfg.compile_mode`` (each one, or their stacked pass)."""
    options = {} if cfg.compile_mode == "default" else {"mode": cfg.compile_mode}
    if hasattr(model, "compile_encoders"):
        model.compile_encoders(**options)
    else:
        for enc in model.enc.values():
            enc.compile(**options)


def pad_batch(batch: dict, size: int) -> dict:
    """Fill a short batch up to ``size`` rows with copies of its first row that hold no target.

    The loss gathers only target slots (real rows come first), so the loss and its gradients are
    those of the short batch; the compiled encoders see one shape all epoch (no recompilation).
    """
    n = len(batch["tgt"])
    if n >= size:
        return batch
    out = {k: torch.cat([t, t[:1].expand(size - n, *t.shape[1:])]) for k, t in batch.items()}
    out["tgt"][n:] = -1
    return out


def train_epoch(model, opt, views: Views, cfg: Config, seed: int, epoch: int, device: torch.device, progress: bool,
                max_steps: int | None = None, pad_last: bool | None = None,
                ranks: distributed.Ranks = distributed.Ranks(), ddp=None) -> float:
    """One pass over the shuffled training lines (or its first ``max_steps`` batches); the mean loss.

    ``pad_last`` (default ``cfg.pad_last_batch``) pads the last, short batch to the full size.
    Over several processes (``ranks``, ``ddp`` = ``distributed.wrap(model)``) each rank trains on
    its slice of every global batch of ``cfg.batch_size`` lines; the loss is the global batches' mean.
    """
    model.train()
    if pad_last is None:
        pad_last = cfg.pad_last_batch
    rng = _seed_epoch(seed, epoch)
    perm = rng.permutation(len(views))
    perm_dev = torch.from_numpy(perm).to(device)
    loss_sum = torch.zeros((), device=device)
    starts = range(0, len(views), cfg.batch_size)[:max_steps]
    for s in tqdm(starts, desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch"):
        host = perm[s : s + cfg.batch_size]
        if ranks.spread:
            loss = _rank_step(model, ddp, views, host, perm_dev[s : s + cfg.batch_size], cfg, device, pad_last, ranks)
        else:
            batch = views.index(perm_dev[s : s + cfg.batch_size])
            if pad_last:
                batch = pad_batch(batch, cfg.batch_size)
            counts = {v: int(views.n_targets[host, VIEW_INDEX[v]].sum()) for v in model.views}
            with _autocast(device, cfg.amp):
                loss = model.loss(batch, counts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach()
    return float(distributed.mean_over_ranks(loss_sum, ranks)) / max(1, len(starts))


def _rank_step(model, ddp, views: Views, host: np.ndarray, rows: torch.Tensor, cfg: Config, device: torch.device,
               pad_last: bool, ranks: distributed.Ranks) -> torch.Tensor:
    """This rank's loss on its slice of the global batch ``host``, scaled so DDP's gradient mean is exact."""
    global_counts = {v: int(views.n_targets[host, VIEW_INDEX[v]].sum()) for v in model.views}
    mine = distributed.local_slice(len(host), ranks)
    counts = {v: int(views.n_targets[host[mine], VIEW_INDEX[v]].sum()) for v in model.views}
    if len(host[mine]):
        batch = views.index(rows[mine])
    else:  # a short last batch left this rank no line: one line without targets keeps it in step
        batch = {k: t[1:] for k, t in pad_batch(views.index(rows[:1]), 2).items()}
    if pad_last:
        batch = pad_batch(batch, -(-cfg.batch_size // ranks.world_size))
    with _autocast(device, cfg.amp):
        return ddp(batch, counts, distributed.sum_scales(global_counts, ranks.world_size))


def make_optimizer(model, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    """Adam with L2 as weight decay (the papers' grids); the fused kernel on CUDA."""
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.l2, fused=device.type == "cuda")


def load_tables(scenario_dir: Path, cfg: Config) -> tuple[dict, dict | None]:
    """The frozen E_img / E_tex tables a configuration needs, from the embedding cache."""
    wanted = needs_tables(cfg)
    if not wanted:
        return {}, None
    from hafvt.embed.cache import load_embeddings

    emb = load_embeddings(scenario_dir, cfg.embeddings or None)
    tables = {"img": emb.image, "tex": emb.text}
    missing = [m for m in wanted if tables[m] is None]
    if missing:
        raise FileNotFoundError(f"embedding cache {emb.path} has no {' and '.join('image' if m == 'img' else 'text' for m in missing)} "
                                f"table; run `hafvt embed {scenario_dir} ...` with images/titles enabled")
    return tables, {**emb.manifest, "cache": Path(emb.path).resolve().relative_to(Path(scenario_dir).resolve()).as_posix()}


def run(scenario_dir: str | Path, cfg: Config, out: str | Path, device: str = "cpu", seed: int = 0,
        progress: bool = True, scenario: Scenario | None = None) -> dict:
    """Train (or fit) ``cfg`` on the scenario, select by validation, write ``out/results.json``; ``out`` is
    locked meanwhile (``hafvt.io.exclusive``: a second process on it gets an error, not a shared run)."""
    scenario_dir, out = Path(scenario_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    procs, dev = distributed.init(device)  # under torchrun: this process's rank and device
    with exclusive(out, f"a run of {cfg.name} seed {seed}") if procs.is_main else contextlib.nullcontext():
        return _run(scenario_dir, cfg, out, device, procs, dev, seed, progress, scenario)


def _run(scenario_dir: Path, cfg: Config, out: Path, device: str, procs, dev, seed: int, progress: bool,
         scenario: Scenario | None) -> dict:
    if procs.is_main:  # what a killed earlier attempt of this run was writing
        remove_stale_temps(out)
    progress = progress and procs.is_main
    if dev.type == "cpu":  # subnormal floats in the softmax tails slow CPU epochs ~15x; results unchanged
        torch.set_flush_denormal(True)
    scn = scenario or read_scenario(scenario_dir)
    if scn.train is None:
        raise FileNotFoundError(f"{scenario_dir}: no train split (traindata_new.txt); "
                                f"derive one with `hafvt derive {scenario_dir} OUT`")
    t0 = time.perf_counter()
    views = {k: v.to(dev) for k, v in scenario_views(scn, cfg.maxlen, cfg.train_targets == "last").items()}
    cands = {s: torch.from_numpy(load_or_draw(scenario_dir, s, scn.split(s).targets, scn.n_x, scn.n_y, cfg.n_neg, cfg.candidate_seed)).to(dev)
             for s in ("valid", "test")}
    tables, manifest = load_tables(scenario_dir, cfg)
    torch.manual_seed(seed)
    model = build_model(cfg, scn, tables).to(dev)
    trainable = getattr(model, "trainable", True)
    opt = make_optimizer(model, cfg, dev) if trainable else None
    if trainable and cfg.compile and dev.type == "cuda":
        compile_model(model, cfg)
    used = [candidates_path(scenario_dir, s, cfg.candidate_seed, cfg.n_neg) for s in ("valid", "test")]
    prov = run_provenance(scenario_dir, cfg.to_dict(), cfg.hash(), seed, device, manifest, used)
    if procs.spread:
        prov["world_size"] = procs.world_size
    state = {"epoch": 0, "history": [], "best": {}}
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        saved = load_checkpoint(ckpt, dev)
        if (saved["config_hash"], saved["seed"], saved["data_hash"]) != (cfg.hash(), seed, prov["data_hash"]):
            raise ValueError(f"{ckpt} belongs to another config, seed or data; use another --out or delete it")
        changed = _changed(saved["sources"], prov["sources"], prov, manifest is not None)
        if changed:
            raise ValueError(f"{ckpt} was made by other sources ({', '.join(changed[:3])} changed since): resuming would "
                             "mix them in one run; delete it to train from the start")
        try:
            model.load_state_dict(saved["model"])
        except RuntimeError as e:
            raise ValueError(f"{ckpt} does not fit this model ({' '.join(str(e).split())[:300]}); delete it") from None
        if opt is not None:
            opt.load_state_dict(saved["optim"])
        state = _state_from_ckpt(saved["state"])
    log = out / "log.jsonl"
    if procs.is_main:  # the log as far as the checkpoint goes (a killed attempt may have logged further), then by lines
        atomic_write_text(log, "".join(_json_line(e) for e in state["history"]))
    ddp = None
    if trainable and procs.spread:
        distributed.check_supported(model, cfg.model)
        ddp = distributed.wrap(model, dev)
    epochs = cfg.epochs if trainable else 0
    domains = {s: views[s].domain.cpu().numpy() for s in ("valid", "test")}
    if trainable and epochs < 1:
        raise ValueError("a trainable model needs epochs >= 1")
    first = state["epoch"] + 1 if state["history"] else (1 if trainable else 0)
    for epoch in range(first, epochs + 1):
        if state.get("stopped"):  # a resumed run that had already stopped early
            break
        t_epoch = time.perf_counter()
        loss = train_epoch(model, opt, views["train"], cfg, seed, epoch, dev, progress, ranks=procs, ddp=ddp) if epoch > 0 else None
        entry = {"epoch": epoch, "train_loss": loss, "seconds": round(time.perf_counter() - t_epoch, 3)}
        evaluate = epoch == epochs or (epoch > 0 and epoch % cfg.eval_every == 0)
        if evaluate and not procs.is_main:  # rank 0 evaluates and writes; take its state (and its stop decision)
            state = distributed.from_rank0(None, procs)
            continue
        if evaluate:
            ties = tuple(dict.fromkeys((*REPORTED_TIES, cfg.tie)))  # cfg.tie may be 'against'
            ranks = {s: rank_split(model, views[s], cands[s], scn.n_x, ties=ties) for s in ("valid", "test")}
            valid = metrics_of(ranks["valid"], domains["valid"], cfg.tie)
            entry["valid"] = valid["sampled"]
            entry["test"] = metrics_of(ranks["test"], domains["test"], cfg.tie)["sampled"]
            improved = False
            for d in ("X", "Y"):
                mrr = valid["sampled"][d]["mrr"]
                if d not in state["best"] or mrr > state["best"][d]["valid_mrr"]:
                    keep = domains["test"] == (0 if d == "X" else 1)
                    state["best"][d] = {"epoch": epoch, "valid_mrr": mrr, "valid": {k: valid[k][d] for k in valid},
                                        "test_ranks": {f"{k}/{t}": r[keep] for (k, t), r in ranks["test"].items()}}
                    improved = True
            # patience: stop after cfg.patience evaluations in which neither domain's validation MRR improved
            state["stale_evals"] = 0 if improved else state.get("stale_evals", 0) + 1
            if trainable and cfg.patience and state["stale_evals"] >= cfg.patience:
                state["stopped"] = epoch
        state["epoch"] = epoch
        state["history"].append(entry)
        if progress:
            shown = "" if "valid" not in entry else "  valid MRR X {:.4f} Y {:.4f}".format(entry["valid"]["X"]["mrr"], entry["valid"]["Y"]["mrr"])
            tqdm.write(f"epoch {epoch}: loss {loss if loss is None else round(loss, 4)}{shown}")
        if procs.is_main:
            append_line(log, _json_line(entry).rstrip("\n"))
        if "valid" in entry and trainable and procs.is_main:
            saved = {"model": model.state_dict(), "optim": opt.state_dict(), "state": _state_to_ckpt(state),
                     "config_hash": cfg.hash(), "seed": seed, "data_hash": prov["data_hash"], "sources": prov["sources"]}
            atomic_torch_save(ckpt, {**saved, "digest": checkpoint_digest(saved)})
        if evaluate:
            state = distributed.from_rank0(state, procs)
    results = summarise(state, cfg, prov, time.perf_counter() - t0)
    if procs.is_main:
        atomic_write_json(out / "results.json", results)
        save_test_ranks(out / "test_ranks.npz", state, domains["test"])
    distributed.finish(procs)
    return results


CHECKPOINT_KEYS = ("model", "optim", "state", "config_hash", "seed", "data_hash", "sources", "digest")


def load_checkpoint(path: Path, map_location=None) -> dict:
    """A checkpoint of tensors and plain types; ``weights_only=True``, so opening a run never runs its code.
    Whatever is damaged (truncated, empty, keys missing, bytes changed: its ``digest``) is a ValueError."""
    import pickle

    delete = "delete it to train this run from the start"
    try:
        saved = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        why = next((ln.strip() for ln in str(e).splitlines() if "WeightsUnpickler error" in ln), str(e).splitlines()[0]).split(" Please use")[0]
        raise ValueError(f"{path}: refused to load, the checkpoint holds objects other than tensors and plain "
                         f"types (loading it would run pickled code; one written before hafvt stored tensors only holds "
                         f"numpy arrays: delete it and train again): {why}") from None
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ... for a damaged file
        raise ValueError(f"{path}: damaged checkpoint, cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:200]}); {delete}") from None
    missing = [k for k in CHECKPOINT_KEYS if k not in saved] if isinstance(saved, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise ValueError(f"{path}: not a whole checkpoint of this hafvt (lacks {', '.join(missing)}; one written before "
                         f"checkpoints carried their sources and a digest lacks those); {delete}")
    if saved["digest"] != checkpoint_digest({k: v for k, v in saved.items() if k != "digest"}):
        raise ValueError(f"{path}: damaged checkpoint, its content does not match the digest it was saved with; {delete}")
    return saved


def checkpoint_digest(obj) -> str:
    """sha256 (16 hex) of a checkpoint's content: every tensor's dtype, shape and bytes, every plain value."""
    import hashlib

    h = hashlib.sha256()

    def add(x):
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(f"K{k!r}".encode())
                add(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                add(v)
            h.update(b"]")
        else:
            h.update(f"V{x!r}".encode())

    add(obj)
    return h.hexdigest()[:16]


def _state_to_ckpt(state: dict) -> dict:
    """The training state with its numpy rank arrays as tensors (``weights_only`` loads no numpy)."""
    best = {d: {**b, "test_ranks": {k: torch.from_numpy(r) for k, r in b["test_ranks"].items()}} for d, b in state["best"].items()}
    return {**state, "best": best}


def _state_from_ckpt(state: dict) -> dict:
    best = {d: {**b, "test_ranks": {k: r.cpu().numpy() for k, r in b["test_ranks"].items()}} for d, b in state["best"].items()}
    return {**state, "best": best}


def summarise(state: dict, cfg: Config, prov: dict, seconds: float) -> dict:
    """Test metrics at each domain's selected epoch, for the config's tie policy and average ties."""
    def at_best(tie):
        out = {}
        for kind in ("sampled", "full"):
            out[kind] = {}
            for d in ("X", "Y"):
                out[kind][d] = metrics_from_ranks(torch.from_numpy(state["best"][d]["test_ranks"][f"{kind}/{tie}"]))
        return out

    trained = state["epoch"] > 0
    return {
        "metrics": at_best(cfg.tie),
        "metrics_average_ties": at_best("average"),
        "tie": cfg.tie,
        "selected_epoch": {d: state["best"][d]["epoch"] for d in ("X", "Y")},
        "last_epoch": state["epoch"],
        "stopped_early": bool(state.get("stopped")),
        # selected at the last epoch of a run that was not stopped by patience: the curve may still rise
        "selected_at_last_epoch": {d: trained and not state.get("stopped") and state["best"][d]["epoch"] == state["epoch"]
                                   for d in ("X", "Y")},
        "valid_at_selected": {d: state["best"][d]["valid"] for d in ("X", "Y")},
        "history": state["history"],
        "label": prov["data_label"],
        "config": cfg.to_dict(),
        "provenance": prov,
        "seconds": round(seconds, 2),
    }


def save_test_ranks(path: Path, state: dict, test_domain: np.ndarray) -> None:
    """Per test line ranks at the selected epoch (for paired comparisons between models)."""
    arrays = {"domain": test_domain}
    for d, code in (("X", 0), ("Y", 1)):
        lines = np.flatnonzero(test_domain == code)
        for key, r in state["best"][d]["test_ranks"].items():
            arrays.setdefault(key.replace("/", "_"), np.zeros(len(test_domain)))[lines] = r
    atomic_save_npz(path, **arrays)


def _json_line(obj) -> str:
    return json.dumps(obj, sort_keys=True) + "\n"
