"""Item images: download the catalogue's URLs into ``<scenario>/image_cache/``, verify, report.

- Concurrent (threads), retries with exponential back-off on errors that may pass (timeouts,
  connection errors, HTTP 408/429/5xx, truncated bodies); redirects are followed.
- Every file is verified to decode (Pillow ``load``) before it is written, atomically.
- Resumable: a cached file that decodes is never fetched again nor overwritten.
- A size cap (``max_bytes``) on every body.
- ``image_report.json`` lists every item without a usable image and why.

Fallback: an item without a usable image gets its title's CLIP text embedding in the image
table (CLIP embeds both in one space, so it is the nearest stand-in the frozen encoder gives;
a zero row would break cosine scores); with neither image nor title it gets its domain's mean
image embedding. hafvt.embed.clip applies it and counts it in the cache manifest.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import random
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image
from tqdm.auto import tqdm

from hafvt.data.catalogue import is_url, read_catalogue
from hafvt.io import atomic_write_bytes, atomic_write_json

CACHE_DIR = "image_cache"
REPORT_FILE = "image_report.json"
FALLBACK = ("image missing -> the title's CLIP text embedding (same joint space; a zero row would break cosine "
            "scores); no image and no title -> the domain's mean image embedding")
USER_AGENT = "hafvt/0.1 (+image cache for research reproduction)"
_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}


class FetchError(Exception):
    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


def cached_path(scenario_dir: str | Path, url: str) -> Path:
    """Where the download of ``url`` lives: named by the URL's hash, so a changed URL is a new file."""
    suffix = Path(urlsplit(url).path).suffix.lower()
    name = hashlib.sha1(url.encode()).hexdigest()[:32] + (suffix if suffix in _SUFFIXES else ".img")
    return Path(scenario_dir) / CACHE_DIR / name


def image_file(scenario_dir: str | Path, row: dict) -> Path | None:
    """The local file holding a catalogue row's image (a relative path or a cached download), if present."""
    image = row.get("image")
    if not image:
        return None
    path = cached_path(scenario_dir, image) if is_url(image) else Path(scenario_dir) / image
    return path if path.is_file() else None


def decode_error(data: bytes | Path) -> str | None:
    """None when ``data`` (bytes or a file) decodes fully as an image, else why not."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            im.load()
            if im.width < 1 or im.height < 1:
                return "empty image"
    except Exception as e:  # Pillow raises many types for bad data
        return f"not a decodable image ({type(e).__name__}: {e})"[:200]
    return None


def fetch(url: str, timeout: float, max_bytes: int) -> bytes:
    """GET ``url`` (redirects followed); FetchError says whether a retry may help."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            if length is not None and int(length) > max_bytes:
                raise FetchError(f"too large ({int(length)} bytes > {max_bytes})", retry=False)
            data = resp.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise FetchError(f"too large (> {max_bytes} bytes)", retry=False)
            if length is not None and len(data) != int(length):
                raise FetchError(f"truncated body ({len(data)} of {length} bytes)", retry=True)
            return data
    except urllib.error.HTTPError as e:
        raise FetchError(f"HTTP {e.code}", retry=e.code in (408, 429) or e.code >= 500) from None
    except http.client.IncompleteRead as e:
        raise FetchError(f"truncated body ({len(e.partial)} bytes read)", retry=True) from None
    except (socket.timeout, TimeoutError):
        raise FetchError(f"timeout after {timeout}s", retry=True) from None
    except urllib.error.URLError as e:
        retry = isinstance(e.reason, (socket.timeout, TimeoutError, ConnectionError, OSError))
        reason = f"timeout after {timeout}s" if isinstance(e.reason, (socket.timeout, TimeoutError)) else f"{e.reason}"
        raise FetchError(reason, retry=retry) from None
    except (ConnectionError, http.client.HTTPException, OSError) as e:
        raise FetchError(f"{type(e).__name__}: {e}", retry=True) from None


def _fetch_one(url: str, dest: Path, retries: int, backoff: float, timeout: float, max_bytes: int) -> tuple[str, str | None]:
    """Download with retries; returns (status, reason)."""
    for attempt in range(retries + 1):
        try:
            data = fetch(url, timeout, max_bytes)
            error = decode_error(data)
            if error:
                return "failed", error
            atomic_write_bytes(dest, data)
            return "downloaded", None
        except FetchError as e:
            if not e.retry or attempt == retries:
                return "failed", e.reason + (f" ({attempt + 1} tries)" if attempt else "")
            time.sleep(backoff * 2**attempt * (1 + 0.25 * random.random()))
    raise AssertionError("unreachable")


def _check(scenario_dir: Path, row: dict, opts: dict) -> tuple[str, str | None]:
    image = row["image"]
    if not image:
        return "no_image", "the catalogue has no image for this item"
    if not is_url(image):
        path = scenario_dir / image
        if not path.is_file():
            return "missing_local", f"file not found: {image}"
        error = decode_error(path)
        return ("local", None) if error is None else ("broken_local", error)
    dest = cached_path(scenario_dir, image)
    if dest.is_file() and decode_error(dest) is None:
        return "cached", None  # resume: good files are neither fetched nor touched
    return _fetch_one(image, dest, **opts)


def download_images(scenario_dir: str | Path, workers: int = 16, retries: int = 3, backoff: float = 1.0,
                    timeout: float = 20.0, max_bytes: int = 20 << 20) -> dict:
    """Fetch and verify every catalogue image; write and return ``image_report.json``."""
    scenario_dir = Path(scenario_dir)
    rows = read_catalogue(scenario_dir)
    opts = dict(retries=retries, backoff=backoff, timeout=timeout, max_bytes=max_bytes)
    results: dict[int, tuple[str, str | None]] = {}
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_check, scenario_dir, row, opts): row["item"] for row in rows}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="images", unit="img", disable=None):
            results[futures[fut]] = fut.result()
    counts: dict[str, int] = {}
    for status, _ in results.values():
        counts[status] = counts.get(status, 0) + 1
    usable = sum(counts.get(s, 0) for s in ("local", "cached", "downloaded"))
    report = {
        "n_items": len(rows),
        "usable": usable,
        "unusable": len(rows) - usable,
        "counts": dict(sorted(counts.items())),
        "fallback": FALLBACK,
        "problems": [{"item": r["item"], "asin": r["asin"], "image": r["image"], "status": results[r["item"]][0],
                      "reason": results[r["item"]][1]} for r in rows if results[r["item"]][1] is not None],
        "settings": {**opts, "workers": workers, "cache_dir": CACHE_DIR},
        "seconds": round(time.time() - t0, 3),
    }
    atomic_write_json(scenario_dir / REPORT_FILE, report)
    return report
