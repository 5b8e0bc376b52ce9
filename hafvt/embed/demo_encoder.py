"""The offline demo encoder: a small open_clip CLIP trained contrastively on a scenario's own
(image, title) pairs, with open_clip's model classes and its ``ClipLoss``.

It exists so the demo book runs without internet. It is NOT the papers' frozen CLIP (trained
on 400M pairs): its embeddings only know the demo's own items. The checkpoint and its config
(``<model>.json``, an open_clip model config) are saved side by side, and embedding goes through
the same local-checkpoint route as real weights:
``hafvt embed DIR --model hafvt-demo-clip --pretrained DIR/encoders/hafvt-demo-clip/hafvt-demo-clip.pt``.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from hafvt.data.catalogue import read_catalogue
from hafvt.embed.images import image_file
from hafvt.io import atomic_torch_save, atomic_write_json, atomic_write_text

DEMO_MODEL = "hafvt-demo-clip"


def tiny_config(image_size: int = 64, patch_size: int = 16, width: int = 128, layers: int = 2, embed_dim: int = 512,
                context_length: int = 16) -> dict:
    """An open_clip model config: a small ViT and a small text transformer (the BPE vocabulary ships with open_clip)."""
    return {"embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": width, "layers": layers,
                           "head_width": 32},
            "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": width, "heads": width // 32,
                         "layers": layers}}


def register_config(name: str, cfg: dict) -> None:
    """Make ``name`` an open_clip model name in this process."""
    import open_clip

    open_clip.factory._MODEL_CONFIGS[name] = cfg


def save_checkpoint(model: torch.nn.Module, cfg: dict, out_dir: str | Path, name: str, extra: dict | None = None) -> Path:
    """``<out_dir>/<name>.pt`` (open_clip state dict) and ``<out_dir>/<name>.json`` (its config), atomically."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / f"{name}.json", json.dumps(cfg, indent=2) + "\n")
    return atomic_torch_save(out_dir / f"{name}.pt", {"state_dict": model.state_dict(), "hafvt": extra or {}})


def _pairs(scenario_dir: Path, preprocess) -> tuple[list[int], torch.Tensor, list[str]]:
    """Items with a decodable image and a title: ids, uint8 images (N, 3, S, S), titles."""
    from hafvt.embed.clip import split_preprocess

    pil_part, _ = split_preprocess(preprocess)
    items, images, titles = [], [], []
    for row in tqdm(read_catalogue(scenario_dir), desc="decode", disable=None, leave=False):
        path = image_file(scenario_dir, row)
        if path is None or not row["title"]:
            continue
        try:
            with Image.open(path) as im:
                arr = np.asarray(pil_part(im), dtype=np.uint8)
        except Exception:
            continue
        items.append(row["item"])
        images.append(torch.from_numpy(arr.copy()).permute(2, 0, 1))
        titles.append(row["title"])
    if len(items) < 2:
        raise ValueError(f"{scenario_dir}: fewer than two items with both an image and a title; nothing to train on")
    return items, torch.stack(images), titles


def train_demo_encoder(scenario_dir: str | Path, out_dir: str | Path | None = None, name: str = DEMO_MODEL,
                       cfg: dict | None = None, epochs: int = 20, batch_size: int = 256, lr: float = 1e-3,
                       weight_decay: float = 0.1, seed: int = 0, threads: int | None = None) -> Path:
    """Train the demo CLIP on the scenario's (image, title) pairs; returns the checkpoint path."""
    import open_clip
    from open_clip.loss import ClipLoss

    scenario_dir = Path(scenario_dir)
    out_dir = Path(out_dir) if out_dir else scenario_dir / "encoders" / name
    cfg = cfg or tiny_config()
    register_config(name, cfg)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    tokenizer = open_clip.get_tokenizer(name)
    items, images, titles = _pairs(scenario_dir, preprocess)
    tokens = tokenizer(titles)
    normalize = preprocess.transforms[-1]
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(items) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    gen = torch.Generator().manual_seed(seed)
    log, t0 = [], time.time()
    model.train()
    for epoch in tqdm(range(epochs), desc="demo encoder", unit="epoch", disable=None):
        order, losses = torch.randperm(len(items), generator=gen), []
        for s in range(steps_per_epoch):
            idx = order[s * batch_size : (s + 1) * batch_size]
            if len(idx) < 2:
                continue
            x = images[idx].float().div(255)
            flip = torch.rand(len(idx), generator=gen) < 0.5  # the only augmentation: mirror half the images
            x[flip] = x[flip].flip(-1)
            img_f = model.encode_image(normalize(x), normalize=True)
            txt_f = model.encode_text(tokens[idx], normalize=True)
            loss = loss_fn(img_f, txt_f, model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
        log.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": round(time.time() - t0, 1)})
    model.eval()
    with torch.inference_mode():  # in-sample retrieval: does an image find its own title among all titles?
        zi = torch.cat([model.encode_image(normalize(images[i:i + 512].float().div(255)), normalize=True)
                        for i in range(0, len(items), 512)])
        zt = torch.cat([model.encode_text(tokens[i:i + 512], normalize=True) for i in range(0, len(items), 512)])
        top1 = float((zi @ zt.T).argmax(1).eq(torch.arange(len(items))).float().mean())
    info = {"model": name, "config": cfg, "pairs": len(items), "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "weight_decay": weight_decay, "seed": seed, "loss": ClipLoss.__module__ + ".ClipLoss", "log": log,
            "image_to_title_top1_in_sample": top1, "chance_top1": 1 / len(items),
            "seconds": round(time.time() - t0, 1), "scenario": str(scenario_dir),
            "note": "offline demo encoder trained on this scenario's own pairs; not the papers' CLIP"}
    path = save_checkpoint(model, cfg, out_dir, name, extra={"pairs": len(items), "epochs": epochs, "seed": seed})
    atomic_write_json(out_dir / "train_log.json", info)
    return path
