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
"""
from __future__ import annotations

import hashlib
import json
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


def main(argv: list[str]) -> int:
    tree, specs_file, out_file = (Path(a) for a in argv)
    import hafvt

    where = Path(hafvt.__file__).resolve()
    if tree.resolve() not in where.parents:
        raise SystemExit(f"probe: imported hafvt from {where}, not from {tree}")
    specs = json.loads(specs_file.read_text())
    with tempfile.TemporaryDirectory() as work:
        digests = probe(specs, Path(work))
    out_file.write_text(json.dumps(digests, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(sys.argv[1]).resolve()))
    sys.exit(main(sys.argv[1:]))
