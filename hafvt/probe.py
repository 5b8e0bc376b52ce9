"""The probe of ``hafvt provenance certify``: train each given configuration briefly on a tiny demo
and print one digest per configuration of everything it computed.

Run as a script under a source tree (``python probe.py TREE SPECS OUT``), so that the same probe runs
the recorded sources (a git worktree) and the current ones: it uses only ``hafvt`` interfaces that
both have (``train.run``, ``train.train_epoch``, ``train.build_model``, the demo writer, the oracle cache).
Deterministic: one thread, CPU, float32, no compilation. Each run is interrupted before its second epoch
and resumed from its checkpoint. Digested: every training step's loss, the per-epoch log, the metrics,
the selected epochs, the per-line test ranks, the final parameters and (where the model explains
itself) the attention weights and fusion probabilities of a few test lines. The image and title tables
are made by the embedding pipeline itself (``embed_scenario``: the demo's images and titles, a small
random-init open_clip model, interrupted after one shard and resumed), and digested too.

Then the command line (``command_line``): each sub-command the results were made with or that writes
data (``demo``, ``stats``, ``derive``, ``images``, ``embed``, ``demo-oracle``, ``train`` of every model
family in the specs, ``reproduce`` as the committed tables were made (a parameters file, worker processes, a
time budget) and resumed, with a failing row, ``sensitivity``, one that fails) on a tiny demo of its own, digesting
what each wrote without its provenance and timings. A second process (``--loaded``) runs the commands the
results were made with and lists the repository modules they import: certify needs none of the others.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# what the probe sets in every configuration: short, evaluated every epoch, on the CPU, exact
PROBE_OVERRIDES = {"epochs": 2, "eval_every": 1, "patience": 0, "amp": False, "compile": False}
PROBE_CLIP = "hafvt-probe-clip"  # a small open_clip model, random-init (seeded): the probe's image/title encoder
TABLE_DIM = 32


class _Digest:
    def __init__(self):
        self.h = hashlib.sha256()

    def add(self, obj) -> None:
        import numpy as np
        import torch

        if isinstance(obj, torch.Tensor):
            obj = obj.detach().cpu().contiguous().numpy()
        if isinstance(obj, np.ndarray):
            self.h.update(f"{obj.dtype}{obj.shape}".encode())
            self.h.update(np.ascontiguousarray(obj).tobytes())
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                self.h.update(repr(k).encode())
                self.add(obj[k])
        elif isinstance(obj, (list, tuple)):
            self.h.update(b"[")
            for x in obj:
                self.add(x)
            self.h.update(b"]")
        else:
            self.h.update(repr(obj).encode())

    def hex(self) -> str:
        return self.h.hexdigest()[:16]


def _numbers(history: list[dict]) -> list[dict]:
    """A run's log without its timings."""
    return [{k: e.get(k) for k in ("epoch", "train_loss", "valid", "test")} for e in history]


def _scenario(work: Path, dig: "_Digest") -> Path:
    """The tiny demo with images, its embedding cache (made, interrupted and resumed) and the oracle cache."""
    import numpy as np

    from hafvt.data.demo import write_demo
    from hafvt.embed.clip import embed_scenario
    from hafvt.embed.demo_encoder import register_config, tiny_config
    from hafvt.embed.oracle import write_oracle_cache

    d = write_demo(work / "tiny", size="tiny", seed=0, images=True)
    register_config(PROBE_CLIP, tiny_config(image_size=32, patch_size=16, width=64, layers=1, embed_dim=TABLE_DIM))
    opts = dict(device="cpu", batch_size=16, workers=0, shard_size=64, precision="fp32")

    def stop(k):
        if k == 0:
            raise KeyboardInterrupt

    try:
        embed_scenario(d, PROBE_CLIP, "random-init", on_shard=stop, **opts)
    except KeyboardInterrupt:  # and what a writer killed inside the next shard leaves behind
        for cache in (d / "embeddings").iterdir():
            (cache / "shards" / ".shard_00001.npz.probe000.tmp").write_bytes(b"torn")
    out = embed_scenario(d, PROBE_CLIP, "random-init", **opts)
    dig.add({f.name: np.load(f) for f in sorted(out.glob("*.npy"))})
    write_oracle_cache(d)
    return d


def probe(specs: list[dict], work: Path) -> dict[str, str]:
    """``{spec id: digest}`` for ``[{"id", "config", "seed", "reference_loss"?}]`` (``reference_loss``: the
    plain softmax form instead of the fused one)."""
    import torch

    import hafvt.models.hafvt as hm
    import hafvt.train as train_mod
    from hafvt.config import Config
    from hafvt.viz import read_history
    from hafvt.data.batches import scenario_views
    from hafvt.data.c2dsr import read_scenario

    torch.set_num_threads(1)
    tables = _Digest()
    d = _scenario(work, tables)
    scn = read_scenario(d)
    out = {"embeddings": tables.hex()}
    real_epoch, real_build, fused = train_mod.train_epoch, train_mod.build_model, hm.FUSED_CE
    for spec in specs:
        dig, steps, built = _Digest(), [], []

        def build(*a, **kw):
            model = real_build(*a, **kw)
            built.append(model)
            loss = getattr(model, "loss", None)
            if loss is None:  # a count-based row: nothing is trained
                return model

            def recorded(*la, **lkw):
                value = loss(*la, **lkw)
                steps.append(value.detach().clone())
                return value

            model.loss = recorded
            return model

        def crash(model, opt, views, cfg, seed, e, *a, **kw):
            if e == 2 and not crash.done:
                crash.done = True
                raise KeyboardInterrupt  # after epoch 1's checkpoint: the resume is probed too
            return real_epoch(model, opt, views, cfg, seed, e, *a, **kw)

        crash.done = False
        cfg = Config(**{**spec["config"], **PROBE_OVERRIDES}).validate()
        rd = work / "runs" / spec["id"]
        train_mod.build_model, train_mod.train_epoch = build, crash
        try:
            hm.FUSED_CE = not spec.get("reference_loss")
            try:
                train_mod.run(d, cfg, rd, device="cpu", seed=spec["seed"], progress=False)
            except KeyboardInterrupt:
                # what a killed writer leaves: a half-written temporary file, and the log read back as is
                (rd / ".log.jsonl.probe000.tmp").write_text('{"epoch": 2, "train')
                dig.add(_numbers(read_history(rd)))
            res = train_mod.run(d, cfg, rd, device="cpu", seed=spec["seed"], progress=False)
        finally:
            train_mod.build_model, train_mod.train_epoch = real_build, real_epoch
            hm.FUSED_CE = fused
        dig.add(steps)
        dig.add(_numbers(res["history"]))
        dig.add([res[k] for k in ("metrics", "metrics_average_ties", "selected_epoch", "last_epoch")])
        import numpy as np

        ranks = np.load(rd / "test_ranks.npz")
        dig.add({k: ranks[k] for k in ranks.files})
        model = built[-1]
        dig.add(model.state_dict())
        if hasattr(model, "explain"):
            model.eval()
            batch = scenario_views(scn, cfg.maxlen)["test"].index(torch.arange(8))
            with torch.no_grad():
                dig.add(model.explain(batch))
        out[spec["id"]] = dig.hex()
    return out


# what differs between two runs of one computation: records of where (the device) and when, and timings
VOLATILE = {"provenance", "seconds", "seconds_per_run", "created", "devices"}


def _stable(obj, work: str):
    """``obj`` without ``VOLATILE`` keys, with the probe's own temporary folder named WORK in every string."""
    if isinstance(obj, dict):
        return {k: _stable(v, work) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_stable(v, work) for v in obj]
    return obj.replace(work, "WORK") if isinstance(obj, str) else obj


def _files(folder: Path, work: Path) -> dict:
    """The content of a folder's data and result files: JSON (and JSON lines) through ``_stable``, Markdown up
    to its provenance section, arrays, images and text as they are; checkpoints and manifests left out."""
    import numpy as np

    out, name = {}, work.name
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json"):
        rel, data = f.relative_to(folder).as_posix(), f.read_bytes()
        if f.suffix == ".json":
            out[rel] = _stable(json.loads(data), name)
        elif f.suffix == ".jsonl":
            out[rel] = [_stable(json.loads(line), name) for line in data.splitlines() if line.strip()]
        elif f.suffix == ".npy":
            out[rel] = np.load(f)
        elif f.suffix == ".npz":
            with np.load(f) as z:
                out[rel] = {k: z[k] for k in z.files}
        elif f.suffix in (".md", ".tex", ".txt", ".png"):
            out[rel] = data.split(b"## Provenance")[0].replace(name.encode(), b"WORK")
    return out


def _cli(argv: list) -> tuple[int, str]:
    """``hafvt ARGV`` in this process: (exit status, stdout)."""
    import contextlib
    import io

    from hafvt.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main([str(a) for a in argv])
    return int(rc or 0), out.getvalue()


def recorded_commands(d: Path, w: Path, specs: list[dict]) -> list[list]:
    """The commands results are made with, on scenario ``d`` into ``w``: ``hafvt train`` of each model family in
    ``specs`` (its first configuration, one epoch) and ``hafvt reproduce`` of a small table with image rows."""
    import yaml

    cmds, seen = [], set()
    for spec in specs:
        cfg = spec["config"]
        if cfg.get("model") in seen:
            continue
        seen.add(cfg.get("model"))
        yml = w / f"{cfg.get('model')}.yaml"
        yml.parent.mkdir(parents=True, exist_ok=True)
        yml.write_text(yaml.safe_dump({**cfg, **PROBE_OVERRIDES, "epochs": 1, "n_neg": 19, "embeddings": "demo-oracle"}))
        cmds.append(["train", d, "--config", yml, "--quiet", "--out", w / f"train-{cfg.get('model')}"])
    cmds.append(["reproduce", d, "--table", "2", "--rows", "popularity,sasrec,ifcdsr", "--seeds", "2", "--epochs", "1",
                 "--set", "q=16", "--set", "hidden=16", "--set", "n_neg=19", "--set", "embeddings=demo-oracle",
                 "--quiet", "--out", w / "table"])
    return cmds


def command_line(work: Path, specs: list[dict]) -> dict[str, str]:
    """``{"command <name>": digest}`` of every sub-command that writes data or results, on a tiny demo of its
    own (see the module docstring)."""
    import numpy as np
    import yaml

    from hafvt.embed.demo_encoder import register_config, tiny_config

    register_config(PROBE_CLIP, tiny_config(image_size=32, patch_size=16, width=64, layers=1, embed_dim=TABLE_DIM))
    w, out = work / "cli", {}
    d = w / "demo"

    def digest(name: str, *parts) -> None:
        dig = _Digest()
        dig.add(list(parts))
        out[f"command {name}"] = dig.hex()

    digest("demo", _cli(["demo", d, "--size", "tiny", "--seed", "1", "--images"])[0], _files(d, work))
    rc, text = _cli(["stats", d, "--json"])
    digest("stats", rc, json.loads(text))
    rc, _ = _cli(["derive", d, w / "derived", "--train-fraction", "0.5", "--seed", "1"])
    digest("derive", rc, _files(w / "derived", work))
    digest("images", _cli(["images", d, "--workers", "1"])[0])
    rc, _ = _cli(["embed", d, "--model", PROBE_CLIP, "--pretrained", "random-init", "--device", "cpu", "--workers", "0",
                  "--shard-size", "64", "--precision", "fp32", "--name", "probe-cli"])
    digest("embed", rc, {f.name: np.load(f) for f in sorted((d / "embeddings" / "probe-cli").glob("*.npy"))})
    rc, _ = _cli(["demo-oracle", d])
    digest("demo-oracle", rc, _files(d / "embeddings" / "demo-oracle", work))
    for cmd in recorded_commands(d, w, specs):
        rc, _ = _cli(cmd)
        digest(f"{cmd[0]} {Path(cmd[-1]).name}", rc, _files(Path(cmd[-1]), work))
    # as the committed tables were made: a parameters file, worker processes, a time budget; then resumed
    params = w / "params.yaml"
    params.write_text(yaml.safe_dump({"seeds": 2, "epochs": 1, "rows_table2": ["popularity", "sasrec"],
                                      "overrides": {"hidden": 16, "n_neg": 19}}))
    pooled = ["reproduce", d, "--table", "2", "--params", params, "--jobs", "2", "--max-minutes", "30", "--quiet",
              "--out", w / "pooled"]
    for name in ("pooled", "pooled again"):  # the second call reuses every run
        digest(f"reproduce {name}", _cli(pooled)[0], _files(w / "pooled", work))
    rc, _ = _cli(["reproduce", d, "--table", "2", "--rows", "popularity,ifcdsr", "--seeds", "1", "--epochs", "1",
                  "--set", "q=16", "--set", "n_neg=19", "--set", "embeddings=none-such", "--quiet", "--out", w / "failing"])
    digest("reproduce with a failing row", rc, _files(w / "failing", work))
    rc, _ = _cli(["sensitivity", d, "--row", "sasrec", "--vary", "hidden=8,16", "--seeds", "1", "--epochs", "1",
                  "--set", "n_neg=19", "--quiet", "--out", w / "sensitivity"])
    digest("sensitivity", rc, _files(w / "sensitivity", work))
    digest("failing", _cli(["train", w / "missing", "--config", "configs/sasrec.yaml", "--out", w / "x"])[0])
    return out


def loaded(tree: Path) -> list[str]:
    """The repository's Python files this process has imported (``provenance.loaded_sources`` is newer than
    the trees certify probes, so the probe has its own)."""
    base = tree.resolve()
    found = {Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
    rel = (p.relative_to(base).as_posix() for p in found if base in p.parents and p.suffix == ".py")
    return sorted(r for r in rel if r.startswith("hafvt/"))


def main(argv: list[str]) -> int:
    if argv[0] == "--loaded":  # TREE SCENARIO WORK SPECS OUT: the recorded commands alone, then what they imported
        tree, d, w, specs_file, out_file = (Path(a) for a in argv[1:])
        for cmd in recorded_commands(d, w, json.loads(specs_file.read_text())):
            _cli(cmd)
        out_file.write_text(json.dumps(loaded(tree)))
        return 0
    tree, specs_file, out_file = (Path(a) for a in argv)
    import hafvt

    where = Path(hafvt.__file__).resolve()
    if tree.resolve() not in where.parents:
        raise SystemExit(f"probe: imported hafvt from {where}, not from {tree}")
    specs = json.loads(specs_file.read_text())
    with tempfile.TemporaryDirectory() as work:
        digests = probe(specs, Path(work))
        digests |= command_line(Path(work), specs)
        res = subprocess.run([sys.executable, __file__, "--loaded", tree, Path(work) / "cli" / "demo",
                              Path(work) / "loaded", specs_file, Path(work) / "loaded.json"], capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"probe --loaded failed:\n{res.stderr[-3000:]}")
        imported = json.loads((Path(work) / "loaded.json").read_text())
    out_file.write_text(json.dumps({"digests": digests, "loaded": imported}, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(sys.argv[2] if sys.argv[1] == "--loaded" else sys.argv[1]).resolve()))
    sys.exit(main(sys.argv[1:]))
