"""Frozen open_clip encoders for item images and titles, and the embedding cache they fill.

``--pretrained`` is an open_clip tag (its weights must already be on disk: nothing is ever
downloaded, a missing file fails at once and says where to put it), a local checkpoint file (an
open_clip config JSON named ``<model>.json`` beside it is registered, so custom models work from a
fresh process), or ``random-init`` (seeded, for tests; its name is in the manifest).

Items are cut into shards of ``shard_size`` ids; each finished shard is written atomically, so an
interrupted run resumes where it stopped. Under ``torchrun`` every process takes every
``world_size``-th shard and rank 0 merges. Fallbacks: see hafvt.embed.images.FALLBACK.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network; set HF_HUB_OFFLINE=0 to allow it

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

import hafvt
from hafvt.data.catalogue import domain_counts, item_list_hash, read_catalogue
from hafvt.embed.cache import MANIFEST, SOURCES, cache_dir, check_cache_name, default_cache_name
from hafvt.embed.images import FALLBACK, MAX_PIXELS, image_file, pixel_cap_error
from hafvt.io import atomic_save_npy, atomic_save_npz, atomic_write_json, remove_stale_temps

RANDOM_INIT = "random-init"
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------- weights


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached_tag_file(model: str, tag: str, cache_dir: str | None) -> tuple[Path | None, str]:
    """The local file of an open_clip pretrained tag if it is on disk, else (None, where to put it)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, tag)
    places = []
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        hub = cfg["hf_hub"]
        if hub.endswith("/"):  # repo only: open_clip's default file names
            repo, names = hub[:-1], ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        else:
            repo, fname = os.path.split(hub)
            names = ([fname[:-4] + ".safetensors"] if fname.endswith((".bin", ".pth")) else []) + [fname]
        for name in names:
            hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit), ""
        places.append(f"the Hugging Face cache (`hf download {repo} {names[-1]}` on a machine with internet, "
                      f"then copy ~/.cache/huggingface/hub/models--{repo.replace('/', '--')} to this machine's cache)")
    if cfg.get("url"):
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if target.is_file():
            return target, ""
        places.append(f"{target} (from {cfg['url']})")
    return None, " or ".join(places)


def resolve_pretrained(model: str, pretrained: str, cache_dir: str | None = None) -> dict:
    """Decide where the weights come from, without any network access; raise if they are absent."""
    import open_clip

    if pretrained == RANDOM_INIT:
        return {"kind": RANDOM_INIT, "path": None}
    path = Path(pretrained).expanduser()
    if path.is_file():
        return {"kind": "file", "path": path.resolve()}
    if model not in open_clip.list_models() and not open_clip.get_pretrained_cfg(model, pretrained):
        raise FileNotFoundError(f"--pretrained {pretrained}: no such file, and {model!r} is not an open_clip model")
    tags = open_clip.list_pretrained_tags_by_model(model)
    if not open_clip.get_pretrained_cfg(model, pretrained):
        if any(s in pretrained for s in ("/", "\\", ".")):
            raise FileNotFoundError(f"checkpoint file not found: {pretrained}")
        raise FileNotFoundError(f"{pretrained!r} is neither a file nor a pretrained tag of {model} "
                                f"(tags: {', '.join(tags) or 'none'}; or use {RANDOM_INIT})")
    local, where = _cached_tag_file(model, pretrained, cache_dir)
    if local is None:
        raise FileNotFoundError(
            f"the weights of {model}/{pretrained} are not on this machine and hafvt never downloads them. "
            f"Put them in {where}; or pass --pretrained /path/to/checkpoint.(pt|bin|safetensors)")
    return {"kind": "tag", "path": local, "tag_cfg": open_clip.get_pretrained_cfg(model, pretrained)}


def register_config_beside(checkpoint: str | Path, model: str) -> bool:
    """Register ``<model>.json`` found beside a checkpoint as an open_clip model config."""
    import open_clip

    cfg_file = Path(checkpoint).parent / f"{model}.json"
    if not cfg_file.is_file():
        return False
    open_clip.factory._MODEL_CONFIGS[model] = json.loads(cfg_file.read_text())
    return True


@dataclass
class Encoder:
    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    name: str
    pretrained: str
    device: torch.device
    info: dict = field(default_factory=dict)


def load_encoder(model: str, pretrained: str, device: str | torch.device = "cpu", cache_dir: str | None = None,
                 seed: int = 0) -> Encoder:
    """An open_clip model in eval mode with its validation transform and tokenizer."""
    import open_clip

    src = resolve_pretrained(model, pretrained, cache_dir)
    if src["kind"] == "file" and model not in open_clip.list_models():
        if not register_config_beside(src["path"], model):
            raise FileNotFoundError(f"{model!r} is not an open_clip model and {src['path'].parent}/{model}.json "
                                    f"(its config) is not beside the checkpoint")
    kwargs = {}
    if src["kind"] == "tag":  # load the cached file, with the tag's preprocessing and activation
        cfg = src["tag_cfg"]
        kwargs = dict(image_mean=cfg.get("mean"), image_std=cfg.get("std"), image_interpolation=cfg.get("interpolation"),
                      image_resize_mode=cfg.get("resize_mode"), force_quick_gelu=bool(cfg.get("quick_gelu", False)))
    torch.manual_seed(seed)  # random-init is reproducible
    net, _, preprocess = open_clip.create_model_and_transforms(
        model, pretrained=str(src["path"]) if src["path"] else None, device=device, **kwargs)
    net.eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(model)
    with torch.inference_mode():
        dim = net.encode_text(tokenizer(["x"]).to(device)).shape[-1]
    info = {"pretrained_kind": src["kind"], "quick_gelu": kwargs.get("force_quick_gelu", False), "embed_dim": int(dim)}
    if src["path"]:
        from hafvt.provenance import portable  # a manifest travels with results: no absolute path

        info.update(weights_file=portable(src["path"]), weights_sha256=sha256_file(src["path"]))
    else:
        info["seed"] = seed
    return Encoder(net, preprocess, tokenizer, model, str(pretrained), torch.device(device), info)


# --------------------------------------------------------------------------- encoding


def split_preprocess(preprocess):
    """(PIL part, Normalize) of an open_clip transform, so workers ship uint8 and the device normalises."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    idx = [i for i, t in enumerate(steps) if isinstance(t, T.ToTensor) or type(t).__name__ == "MaybeToTensor"]
    if len(idx) == 1 and idx[0] == len(steps) - 2 and isinstance(steps[-1], T.Normalize):
        return T.Compose(steps[: idx[0]]), steps[-1]
    return preprocess, None  # unusual pipeline: run all of it in the workers


class ImageFiles(torch.utils.data.Dataset):
    """Decoded, resized images as uint8 (C, H, W) tensors (or the full transform); failures, and images of more
    than ``max_pixels`` (refused from the header, before decoding), give ok=False."""

    def __init__(self, paths: list, transform, size: int, uint8: bool, jpeg_draft: bool = False,
                 max_pixels: int = MAX_PIXELS):
        self.paths, self.transform, self.size, self.uint8, self.draft = paths, transform, size, uint8, jpeg_draft
        self.max_pixels = max_pixels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        path = self.paths[i]
        if path is not None:
            try:
                with Image.open(path) as im:
                    if pixel_cap_error(im, self.max_pixels):
                        raise ValueError("too many pixels")
                    if self.draft:
                        im.draft("RGB", (self.size, self.size))
                    im = self.transform(im)
                x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1) if self.uint8 else im
                return x.contiguous(), True
            except Exception:
                pass
        return torch.zeros(3, self.size, self.size, dtype=torch.uint8 if self.uint8 else torch.float32), False


# --------------------------------------------------------------------------- decoding on the device

DECODE_CHOICES = ("auto", "gpu", "cpu")
JPEG_MAGIC = b"\xff\xd8\xff"


class TensorPreprocess:
    """The PIL part of an open_clip transform (Resize, CenterCrop, RGB) on uint8 (3, H, W) tensors.

    Images of one size are resized as one stack, on whatever device they are on; the result is a
    uint8 (n, 3, S, S) batch like ``ImageFiles`` gives. Any other step raises ValueError.
    """

    def __init__(self, pil_part, size: int):
        from torchvision import transforms as T

        self.size, self.ops = size, []
        for t in getattr(pil_part, "transforms", [pil_part]):
            if isinstance(t, T.Resize):
                self.ops.append(("resize", dict(size=t.size, interpolation=t.interpolation, max_size=t.max_size,
                                                antialias=True)))
            elif isinstance(t, T.CenterCrop):
                self.ops.append(("crop", dict(output_size=list(t.size))))
            elif "convert" not in (getattr(t, "__name__", "") or type(t).__name__).lower():  # RGB: decode does it
                raise ValueError(f"no tensor version of preprocessing step {t!r}")

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        out = torch.empty(len(images), 3, self.size, self.size, dtype=torch.uint8, device=images[0].device)
        groups: dict[tuple, list[int]] = {}
        for k, im in enumerate(images):
            groups.setdefault(tuple(im.shape), []).append(k)
        for ks in groups.values():
            x = torch.stack([images[k] for k in ks])
            for op, kw in self.ops:
                x = TF.resize(x, **kw) if op == "resize" else TF.center_crop(x, **kw)
            if x.shape[-2:] != (self.size, self.size):
                raise ValueError(f"preprocessing gives {tuple(x.shape[-2:])} images, the model takes {self.size}")
            out[ks] = x
        return out


class RawFiles(torch.utils.data.Dataset):
    """(index, raw file bytes as a uint8 tensor, or None when unreadable or over ``max_pixels`` by its header)."""

    def __init__(self, paths: list, max_pixels: int = MAX_PIXELS):
        self.paths, self.max_pixels = paths, max_pixels

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            data = Path(self.paths[i]).read_bytes()
        except (OSError, TypeError):  # missing path, unreadable file
            return i, None
        try:
            with Image.open(io.BytesIO(data)) as im:  # the header only
                if pixel_cap_error(im, self.max_pixels):
                    return i, None
        except Exception:  # not an image Pillow knows: the decoder says what it is
            pass
        return i, (torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else None)


def _as_list(items):
    return items


def _decode_jpegs(raws: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """decode_jpeg in one call; if the batch fails, image by image (None for the ones that fail)."""
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 marks its image decoders deprecated
        try:
            return list(decode_jpeg(raws, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out = []
            for r in raws:
                try:
                    out.append(decode_jpeg(r, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out


def decode_chunk(items: list, prep: TensorPreprocess, device: torch.device, fallback: "ImageFiles"):
    """uint8 (n, 3, S, S) on ``device`` and the decoded mask for (index, bytes) items: JPEGs decoded and
    resized on the device, everything else (PNG, broken files) through the PIL path ``fallback``."""
    idx = [i for i, _ in items]
    jpeg = [k for k, (_, raw) in enumerate(items) if raw is not None and bytes(raw[:3].tolist()) == JPEG_MAGIC]
    decoded = _decode_jpegs([items[k][1] for k in jpeg], device) if jpeg else []
    good = [(k, im) for k, im in zip(jpeg, decoded) if im is not None and im.numel()]
    x = torch.empty(len(items), 3, prep.size, prep.size, dtype=torch.uint8, device=device)
    ok = torch.ones(len(items), dtype=torch.bool)
    if good:
        x[[k for k, _ in good]] = prep([im for _, im in good])
    for k in sorted(set(range(len(items))) - {k for k, _ in good}):
        img, ok[k] = fallback[idx[k]]
        x[k] = img.to(device)
    return x, ok


def resolve_decode(decode: str, device: torch.device, jpeg_draft: bool = False) -> str:
    """'gpu' | 'cpu' | 'auto' -> 'tensor' (torchvision decode + tensor resize on the device) or 'pil' (workers)."""
    if decode not in DECODE_CHOICES:
        raise ValueError(f"decode must be one of {DECODE_CHOICES}, got {decode!r}")
    if decode == "gpu":
        if device.type != "cuda":
            raise ValueError("--decode gpu needs a CUDA device")
        if jpeg_draft:
            raise ValueError("--jpeg-draft is a PIL option: use it with --decode cpu")
        return "tensor"
    if decode == "auto" and device.type == "cuda" and not jpeg_draft:
        return "tensor"
    return "pil"


def _autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def _image_size(enc: Encoder) -> int:
    size = getattr(enc.model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def encode_image_shards(enc: Encoder, paths: list, bounds: list[tuple[int, int]], batch_size: int = 256,
                        workers: int = 0, precision: str = "fp32", jpeg_draft: bool = False, decode: str = "pil",
                        max_pixels: int = MAX_PIXELS):
    """Yield (embeddings (hi-lo, e) float32 L2-normalised, decoded mask) for each (lo, hi) of ``bounds``.

    One DataLoader serves every shard (workers start once); model batches never cross a shard
    boundary, so a shard's rows do not depend on which other shards run with it. ``decode``:
    'pil' = workers decode and resize with PIL; 'tensor' = workers only read the files, JPEGs are
    decoded (torchvision, nvjpeg on CUDA) and resized on the encoder's device (``resolve_decode``).
    Images of more than ``max_pixels`` are refused from their header, before decoding (ok=False).
    """
    pil_part, normalize = split_preprocess(enc.preprocess)
    ds = ImageFiles(paths, pil_part, _image_size(enc), uint8=normalize is not None, jpeg_draft=jpeg_draft,
                    max_pixels=max_pixels)
    chunk = min(batch_size, 128)  # workers ship small chunks (bounded shared memory); the device gathers batches
    chunks = [list(range(s, min(s + chunk, hi))) for lo, hi in bounds for s in range(lo, hi, chunk)]
    if decode == "tensor":
        if normalize is None:
            raise ValueError("tensor decoding needs an open_clip transform ending in ToTensor, Normalize")
        prep = TensorPreprocess(pil_part, _image_size(enc))
        dl = torch.utils.data.DataLoader(RawFiles(paths, max_pixels), batch_sampler=chunks, num_workers=workers,
                                         collate_fn=_as_list)
        it = (decode_chunk(items, prep, enc.device, ds) for items in dl)
    elif decode == "pil":
        dl = torch.utils.data.DataLoader(ds, batch_sampler=chunks, num_workers=workers, pin_memory=enc.device.type == "cuda")
        it = iter(dl)
    else:
        raise ValueError(f"decode must be 'pil' or 'tensor', got {decode!r}")
    with torch.inference_mode():
        for lo, hi in bounds:
            out, oks, pending, seen = [], [], [], lo
            while seen < hi:
                x, ok = next(it)
                seen += len(x)
                pending.append(x.to(enc.device, non_blocking=True))
                oks.append(ok)
                if sum(len(p) for p in pending) >= batch_size or seen >= hi:
                    x = torch.cat(pending)
                    pending.clear()
                    if normalize is not None:
                        x = normalize(x.float().div(255))
                    with _autocast(enc.device, precision):
                        z = enc.model.encode_image(x)
                    out.append(torch.nn.functional.normalize(z.float(), dim=-1).cpu())
            yield torch.cat(out).numpy().astype(np.float32), torch.cat(oks).numpy()


def encode_images(enc: Encoder, paths: list, batch_size: int = 256, workers: int = 0, precision: str = "fp32",
                  jpeg_draft: bool = False, decode: str = "pil",
                  max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised image embeddings (n, e) float32 and a mask of the images that decoded."""
    if not paths:
        return np.zeros((0, enc.info["embed_dim"]), np.float32), np.zeros(0, bool)
    return next(encode_image_shards(enc, paths, [(0, len(paths))], batch_size, workers, precision, jpeg_draft, decode,
                                    max_pixels))


def encode_texts(enc: Encoder, texts: list[str], batch_size: int = 256, precision: str = "fp32") -> np.ndarray:
    """L2-normalised text embeddings (n, e) float32; the tokenizer cuts titles at its context length."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            tokens = enc.tokenizer(texts[i : i + batch_size]).to(enc.device)
            with _autocast(enc.device, precision):
                z = enc.model.encode_text(tokens)
            out.append(torch.nn.functional.normalize(z.float(), dim=-1).cpu())
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------- the cache


def _dist():
    """(rank, world size), initialising torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")  # only barriers are needed: gloo works for GPU runs too
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def _barrier(world: int):
    if world > 1:
        torch.distributed.barrier()


# plan keys that say what the catalogue holds, not how it is embedded: a change re-embeds, no --overwrite needed
INPUT_KEYS = ("inputs_sha256", "images_fingerprint")  # images_fingerprint: the stat-based key of older caches


def inputs_hash(rows: list[dict], paths: list) -> str:
    """sha256 over what the tables are made of: every title, every image reference, and the bytes of the
    file each image resolves to (None: no usable file), so a rewritten title or a replaced image re-embeds."""
    with ThreadPoolExecutor(8) as pool:  # hashlib lets go of the GIL: files hash in parallel
        digests = list(pool.map(lambda p: None if p is None else sha256_file(p), paths))
    h = hashlib.sha256()
    for r, digest in zip(rows, digests):
        h.update(json.dumps([r["item"], r["title"], r["image"], digest]).encode() + b"\n")
    return h.hexdigest()


def _old_plan(out: Path) -> dict | None:
    if (out / MANIFEST).is_file():
        return json.loads((out / MANIFEST).read_text())["plan"]
    if (out / "shards" / "plan.json").is_file():
        return json.loads((out / "shards" / "plan.json").read_text())
    return None




def _shard_arrays(enc: Encoder, rows: list[dict], image, image_ok, titles: bool, opts: dict) -> dict:
    """One shard's own-modality rows and masks; titles are encoded for the text table or as the image fallback."""
    out = {} if image is None else {"image": image, "image_ok": image_ok}
    img_ok = np.zeros(len(rows), bool) if image_ok is None else image_ok
    idx = [k for k, r in enumerate(rows) if r["title"] and (titles or not img_ok[k])]
    out["text"] = np.zeros((len(rows), enc.info["embed_dim"]), np.float32)
    out["text_ok"] = np.zeros(len(rows), bool)
    if idx:
        out["text"][idx] = encode_texts(enc, [rows[k]["title"] for k in idx], opts["batch_size"], opts["precision"])
        out["text_ok"][idx] = True
    return out


def _fill(own: np.ndarray, ok: np.ndarray, other: np.ndarray, other_ok: np.ndarray, is_y: np.ndarray, table: str):
    """Apply the fallback: own row, else the other modality's row, else the domain mean; returns rows, sources."""
    emb = np.where(ok[:, None], own, other).astype(np.float32)
    source = np.where(ok, 0, np.where(other_ok, 1, 2)).astype(np.int8)
    for d in (False, True):
        dom = is_y == d
        have = dom & (source == 0) if (dom & (source == 0)).any() else dom & (source == 1)
        if (dom & (source == 2)).any():
            if not have.any():
                raise ValueError(f"no item of domain {'XY'[d]} has an image or a title: nothing to build the {table} table from")
            mean = emb[have].mean(0)
            emb[dom & (source == 2)] = mean / np.linalg.norm(mean)
    return emb, source


def embed_scenario(scenario_dir: str | Path, model: str, pretrained: str, images: bool = True, titles: bool = True,
                   device: str | None = None, batch_size: int = 256, workers: int | None = None, precision: str = "auto",
                   shard_size: int = 4096, name: str | None = None, overwrite: bool = False, jpeg_draft: bool = False,
                   weights_dir: str | None = None, on_shard=None, decode: str = "auto",
                   max_pixels: int = MAX_PIXELS) -> Path:
    """Embed every catalogue item; returns the cache directory. Resumes from finished shards; a cache of the same
    settings is reused only while the titles and images it was made from are unchanged (``inputs_hash``)."""
    if name is not None:
        check_cache_name(name)
    if not (images or titles):
        raise ValueError("nothing to embed: both --no-images and --no-titles")
    scenario_dir = Path(scenario_dir)
    rank, world = _dist()
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be auto or one of {', '.join(PRECISIONS)}")
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    decode = resolve_decode(decode, device, jpeg_draft)
    rows = read_catalogue(scenario_dir)
    n_x, n_y = domain_counts(rows)
    enc = load_encoder(model, pretrained, device, cache_dir=weights_dir)
    paths = [image_file(scenario_dir, r) for r in rows] if images else [None] * len(rows)
    out = cache_dir(scenario_dir, name or default_cache_name(model, pretrained))
    shards = out / "shards"
    # a checkpoint file is named by its checksum, so a moved scenario or weights folder still resumes
    plan = {"model": model, "pretrained": enc.pretrained if enc.info["pretrained_kind"] != "file" else "file",
            "weights_sha256": enc.info.get("weights_sha256"), "seed": enc.info.get("seed"),
            "item_list_sha256": item_list_hash(rows), "images": images, "titles": titles, "shard_size": shard_size,
            "precision": precision, "jpeg_draft": jpeg_draft, "preprocess": repr(enc.preprocess),
            "inputs_sha256": inputs_hash(rows, paths)}
    if decode != "pil":  # decoder and resize differ by a pixel level here and there: a setting of the cache
        plan["decode"] = decode
    if max_pixels != MAX_PIXELS:
        plan["max_pixels"] = max_pixels
    if rank == 0:
        old = _old_plan(out)
        changed = sorted(k for k in {*plan, *(old or {})} if k not in INPUT_KEYS and (old or {}).get(k) != plan.get(k))
        if old is not None and changed and not overwrite:
            raise ValueError(f"{out} was made with other settings ({', '.join(changed)} differ); "
                             f"pass --overwrite or choose another --name")
        if out.exists() and (overwrite or old != plan):  # --overwrite, or changed titles/images: embed anew
            shutil.rmtree(out)
        for folder in (out, shards):  # what a killed earlier attempt was writing
            remove_stale_temps(folder)
        if not (out / MANIFEST).is_file():
            atomic_write_json(shards / "plan.json", plan)
    _barrier(world)
    if (out / MANIFEST).is_file():
        return out  # already complete
    opts = dict(batch_size=batch_size, workers=workers, precision=precision, jpeg_draft=jpeg_draft, decode=decode,
                max_pixels=max_pixels)
    n_shards = (len(rows) + shard_size - 1) // shard_size
    todo = [k for k in range(rank, n_shards, world) if not (shards / f"shard_{k:05d}.npz").is_file()]  # resume
    bounds = [(k * shard_size, min((k + 1) * shard_size, len(rows))) for k in todo]
    images_out = encode_image_shards(enc, paths, bounds, **opts) if images else ((None, None) for _ in todo)
    t0 = time.time()
    bar = tqdm(total=sum(hi - lo for lo, hi in bounds), unit="item", disable=None,
               desc=f"embed (rank {rank})" if world > 1 else "embed")
    for k, (lo, hi), (image, image_ok) in zip(todo, bounds, images_out):
        atomic_save_npz(shards / f"shard_{k:05d}.npz", **_shard_arrays(enc, rows[lo:hi], image, image_ok, titles, opts))
        bar.update(hi - lo)
        if on_shard is not None:
            on_shard(k)
    bar.close()
    _barrier(world)
    if rank == 0:
        _merge(out, rows, n_x, n_y, n_shards, plan, enc, images, titles, device, world, batch_size, time.time() - t0)
    _barrier(world)
    return out


def _merge(out: Path, rows, n_x, n_y, n_shards, plan, enc, images, titles, device, world, batch_size, seconds):
    parts = [np.load(out / "shards" / f"shard_{k:05d}.npz") for k in range(n_shards)]
    cat = {key: np.concatenate([p[key] for p in parts]) for key in parts[0].files}
    is_y = np.arange(len(rows)) >= n_x
    dim = cat["text"].shape[1]
    fallback, tables = {}, []
    if images:
        emb, src = _fill(cat["image"], cat["image_ok"], cat["text"], cat["text_ok"], is_y, "image")
        atomic_save_npy(out / "image.npy", emb)
        atomic_save_npy(out / "image_source.npy", src)
        fallback["image"] = {SOURCES["image"][s]: int((src == s).sum()) for s in range(3)}
        tables.append("image")
    if titles:
        other = cat["image"] if images else np.zeros_like(cat["text"])
        other_ok = cat["image_ok"] if images else np.zeros(len(rows), bool)
        emb, src = _fill(cat["text"], cat["text_ok"], other, other_ok, is_y, "text")
        atomic_save_npy(out / "text.npy", emb)
        atomic_save_npy(out / "text_source.npy", src)
        fallback["text"] = {SOURCES["text"][s]: int((src == s).sum()) for s in range(3)}
        tables.append("text")
    pil_part, normalize = split_preprocess(enc.preprocess)
    import open_clip
    import PIL
    import torchvision

    manifest = {
        "format": 1, "model": enc.name, "pretrained": enc.info.get("weights_file", enc.pretrained), **enc.info,
        "random_init": enc.info["pretrained_kind"] == RANDOM_INIT,
        "item_list_sha256": plan["item_list_sha256"], "inputs_sha256": plan["inputs_sha256"],
        "n_items": len(rows), "n_x": n_x, "n_y": n_y,
        "embed_dim": dim, "tables": tables, "dtype": "float32", "rows": "L2-normalised, global item-id order",
        "preprocessing": {
            "image": repr(enc.preprocess), "image_size": _image_size(enc), "jpeg_draft": plan["jpeg_draft"],
            "decode": plan.get("decode", "pil"),
            "normalise_on_device": normalize is not None,
            "text": {"tokenizer": type(enc.tokenizer).__name__, "context_length": getattr(enc.tokenizer, "context_length", None),
                     "long_titles": "cut at the context length by the tokenizer"}},
        "compute": {"device": str(device), "precision": plan["precision"], "world_size": world, "batch_size": batch_size,
                    "seconds": round(seconds, 2)},
        "fallback": {"rule": FALLBACK, **fallback},
        "versions": {"hafvt": hafvt.__version__, "open_clip": open_clip.__version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
                     "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan": plan,
    }
    atomic_write_json(out / MANIFEST, manifest)
    shutil.rmtree(out / "shards")
