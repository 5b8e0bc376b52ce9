#!/usr/bin/env python
"""Benchmark open_clip image encoding: images/s end to end from JPEG files on disk (DataLoader
workers decode; the same code path as ``hafvt embed``) and with inputs already on the device.

  python scripts/bench_clip.py --device cuda --model ViT-B-32 --out bench_clip.json

Weights do not change speed, so ``random-init`` is the default (nothing to download). The JPEGs
are synthetic (``--jpeg-size`` px squares, Amazon high-res images are ~500-1500 px) and sit in
the page cache after they are written: the end-to-end number measures decoding, resizing,
transfer and the model, not a cold disk.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hafvt.embed.clip import PRECISIONS, encode_images, load_encoder, split_preprocess  # noqa: E402
from hafvt.embed.demo_encoder import DEMO_MODEL, register_config, tiny_config  # noqa: E402


def make_jpegs(folder: Path, n: int, size: int, unique: int = 256, seed: int = 0) -> list[Path]:
    """``n`` JPEG files: ``unique`` distinct smooth-plus-noise images, copied round robin."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    blobs = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for _ in range(min(unique, n)):
        base = np.stack([np.sin(6.28 * (a * xx + b * yy) + c) for a, b, c in rng.uniform(0, 3, (3, 3))], -1)
        img = ((base * 0.4 + 0.5 + rng.normal(0, 0.05, base.shape)) * 255).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=90)
        blobs.append(buf.getvalue())
    paths = []
    for i in range(n):
        p = folder / f"{i:07d}.jpg"
        if not p.is_file():
            p.write_bytes(blobs[i % len(blobs)])
        paths.append(p)
    return paths


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def on_device(enc, batch: int, iters: int, precision: str, cast: bool) -> float:
    """images/s encoding a fixed batch already on the device (autocast, or weights cast to half)."""
    size = enc.model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    model, dtype = enc.model, PRECISIONS[precision]
    x = torch.randn(batch, 3, size, size, device=enc.device)
    if cast and dtype is not None:
        model = copy.deepcopy(enc.model).to(dtype)
        x = x.to(dtype)
    ctx = (lambda: torch.autocast(enc.device.type, dtype=dtype)) if (dtype is not None and not cast) else \
        (lambda: torch.autocast(enc.device.type, enabled=False))
    with torch.inference_mode(), ctx():
        for _ in range(3):
            model.encode_image(x)
        sync(enc.device)
        t = time.perf_counter()
        for _ in range(iters):
            model.encode_image(x)
        sync(enc.device)
    return batch * iters / (time.perf_counter() - t)


def decode_only(enc, paths, batch: int, workers: int, draft: bool) -> float:
    """images/s of the DataLoader alone (decode + resize in workers), the CPU side's ceiling."""
    from hafvt.embed.clip import ImageFiles

    pil_part, normalize = split_preprocess(enc.preprocess)
    size = enc.model.visual.image_size
    ds = ImageFiles(paths, pil_part, size[0] if isinstance(size, (tuple, list)) else size, normalize is not None, draft)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers)
    t = time.perf_counter()
    n = sum(len(x) for x, _ in dl)
    return n / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="random-init", help="random-init (default), a tag on disk, or a file")
    ap.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS])
    ap.add_argument("--n-images", type=int, default=20000, help="JPEG files for the end-to-end run")
    ap.add_argument("--jpeg-size", type=int, default=500)
    ap.add_argument("--jpeg-dir", default=None, help="reuse/keep the JPEGs here (default: a temporary folder)")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--iters", type=int, default=50, help="batches for the on-device run")
    ap.add_argument("--skip-draft", action="store_true", help="skip the libjpeg draft-mode end-to-end run")
    ap.add_argument("--out", default="bench_clip.json")
    args = ap.parse_args(argv)

    if args.model == DEMO_MODEL:
        register_config(DEMO_MODEL, tiny_config())
    device = torch.device(args.device)
    precision = ("fp16" if device.type == "cuda" else "fp32") if args.precision == "auto" else args.precision
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    enc = load_encoder(args.model, args.pretrained, device)
    tmp = Path(args.jpeg_dir) if args.jpeg_dir else Path(tempfile.mkdtemp(prefix="bench_clip_"))
    result = {"model": args.model, "pretrained": args.pretrained, "precision": precision, "batch_size": args.batch_size,
              "workers": args.workers, "n_images": args.n_images, "jpeg_size": args.jpeg_size, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}
    try:
        t = time.perf_counter()
        paths = make_jpegs(tmp, args.n_images, args.jpeg_size)
        result["jpeg_write_seconds"] = round(time.perf_counter() - t, 2)
        result["jpeg_mean_bytes"] = int(np.mean([p.stat().st_size for p in paths[:256]]))
        runs = {"on_device_autocast": lambda: on_device(enc, args.batch_size, args.iters, precision, cast=False)}
        if precision != "fp32":
            runs["on_device_weights_cast"] = lambda: on_device(enc, args.batch_size, args.iters, precision, cast=True)
        for draft in (False,) if args.skip_draft else (False, True):
            tag = "_jpeg_draft" if draft else ""
            runs["decode_only" + tag] = lambda d=draft: decode_only(enc, paths, args.batch_size, args.workers, d)

            def e2e(d=draft):
                encode_images(enc, paths[: args.batch_size * 2], args.batch_size, args.workers, precision, d)  # warm-up
                sync(device)
                t0 = time.perf_counter()
                emb, ok = encode_images(enc, paths, args.batch_size, args.workers, precision, d)
                sync(device)
                assert ok.all() and np.isfinite(emb).all()
                return len(paths) / (time.perf_counter() - t0)

            runs["end_to_end" + tag] = e2e
        for name, fn in runs.items():
            result[f"{name}_images_per_s"] = round(fn(), 1)
            print(f"{name:28s} {result[f'{name}_images_per_s']:>10.1f} images/s", flush=True)
    finally:
        if not args.jpeg_dir:
            shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
