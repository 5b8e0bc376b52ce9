"""Item images: download the catalogue's URLs into ``<scenario>/image_cache/``, verify, report.

- Concurrent (threads), retries with exponential back-off on errors that may pass (timeouts,
  connection errors, HTTP 408/429/5xx, truncated bodies); redirects are followed (at most 5).
- ``timeout`` bounds a whole request (connect, headers, body and redirects), not each socket read.
- Address policy: only http(s), and only public addresses (no loopback, private, link-local,
  multicast, reserved or unspecified ones), checked on the address actually connected to, for the
  first URL and after every redirect; ``allow_private`` lifts it (tests and local mirrors).
- Every file is verified to decode (Pillow ``load``, after a pixel cap read from the header) before
  it is written, atomically. Local paths must be relative and stay inside the scenario folder.
- Resumable: a cached file that decodes is never fetched again nor overwritten.
- A size cap (``max_bytes``) on every body.
- ``image_report.json`` lists every item without a usable image and why; a failure of one item
  (whatever it is) is that item's entry, never the end of the command.

Fallback: an item without a usable image gets its title's CLIP text embedding in the image
table (CLIP embeds both in one space, so it is the nearest stand-in the frozen encoder gives;
a zero row would break cosine scores); with neither image nor title it gets its domain's mean
image embedding. hafvt.embed.clip applies it and counts it in the cache manifest.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import ipaddress
import random
import socket
import ssl
import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urljoin, urlsplit

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
# 40 Mpx passes any product photo (8000 x 5000 still does) while one decoded RGB image stays <= 120 MB, so
# 16 download threads or DataLoader workers stay within a few GB; CLIP looks at 224 px anyway
MAX_PIXELS = 40_000_000
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_TLS = ssl.create_default_context()


class FetchError(Exception):
    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


def cached_path(scenario_dir: str | Path, url: str) -> Path:
    """Where the download of ``url`` lives: named by the URL's hash, so a changed URL is a new file."""
    try:
        suffix = Path(urlsplit(url).path).suffix.lower()
    except ValueError:  # a malformed URL (its fetch says so) still has a name of its own
        suffix = ""
    name = hashlib.sha1(url.encode()).hexdigest()[:32] + (suffix if suffix in _SUFFIXES else ".img")
    return Path(scenario_dir) / CACHE_DIR / name


def local_path_problem(image: str) -> str | None:
    """Why a catalogue's local image path is refused (absolute, or ``..`` out of the scenario), or None."""
    path = PurePosixPath(image.replace("\\", "/"))
    if path.is_absolute() or PureWindowsPath(image).anchor or ".." in path.parts:
        return f"local image path {image!r} refused: it must be relative to the scenario folder and stay inside it"
    return None


def image_file(scenario_dir: str | Path, row: dict) -> Path | None:
    """The local file holding a catalogue row's image (a relative path or a cached download), if present."""
    image = row.get("image")
    if not image or (not is_url(image) and local_path_problem(image)):
        return None
    path = cached_path(scenario_dir, image) if is_url(image) else Path(scenario_dir) / image
    return path if path.is_file() else None


def pixel_cap_error(im: Image.Image, max_pixels: int = MAX_PIXELS) -> str | None:
    """Why an opened (not yet decoded) image is refused as too large to decode, or None."""
    if im.width * im.height <= max_pixels:
        return None
    return f"too many pixels ({im.width} x {im.height} > the cap of {max_pixels:,}; decompression bomb?)"


def decode_error(data: bytes | Path, max_pixels: int = MAX_PIXELS) -> str | None:
    """None when ``data`` (bytes or a file) decodes fully as an image of at most ``max_pixels``, else why not."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:  # reads the header only
            error = pixel_cap_error(im, max_pixels)
            if error:
                return error
            im.load()
            if im.width < 1 or im.height < 1:
                return "empty image"
    except Image.DecompressionBombError as e:  # over Pillow's own limit, refused at the header as well
        return f"too many pixels ({e})"[:200]
    except Exception as e:  # Pillow raises many types for bad data
        return f"not a decodable image ({type(e).__name__}: {e})"[:200]
    return None


# --------------------------------------------------------------------------- one request


def address_refusal(ip: str) -> str | None:
    """What kind of non-public address ``ip`` is (loopback, private, ...), or None for a public one."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])  # an IPv6 zone is no part of the address
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(addr, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if addr.is_global else "not globally routable"


def _open_socket(host: str, port: int, deadline: float, allow_private: bool | Collection[str]) -> socket.socket:
    """TCP to an address of ``host`` the policy allows; checked on the address connected to, so no second DNS
    answer can swap in a private one. ``allow_private``: True, or the ``host:port`` endpoints it is lifted for."""
    allowed = allow_private is True or (not isinstance(allow_private, bool) and f"{host}:{port}" in allow_private)
    refused, error = [], None
    for family, kind, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        why = None if allowed else address_refusal(addr[0])
        if why:
            refused.append(f"{addr[0]} ({why})")
            continue
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            sock.connect(addr)
            return sock
        except OSError as e:
            sock.close()
            error = e
    if error is not None:
        raise error
    raise FetchError(f"refused by the address policy: {host} is {', '.join(refused)} (only public addresses are "
                     f"fetched; --allow-private lifts it, for tests and local mirrors)", retry=False)


class _Connection(http.client.HTTPConnection):
    """HTTP or HTTPS through ``_open_socket``; at ``deadline`` a timer shuts the socket, whatever it waits for
    (also once a ``Connection: close`` response has taken the socket over); ``done()`` stops the timer."""

    def __init__(self, host, port, tls: bool, deadline: float, allow_private):
        super().__init__(host, port)
        self.default_port = 443 if tls else 80  # the Host header leaves out the scheme's own port
        self.tls, self.deadline, self.allow_private = tls, deadline, allow_private
        self.expired, self.watched = False, None
        self.timer = threading.Timer(max(deadline - time.monotonic(), 0), self._expire)
        self.timer.daemon = True
        self.timer.start()

    def _expire(self):
        self.expired = True
        if self.watched is not None:
            try:
                socket.socket.shutdown(self.watched, socket.SHUT_RDWR)  # the plain socket's shutdown: TLS too
            except OSError:
                pass

    def connect(self):
        sock = _open_socket(self.host, self.port, self.deadline, self.allow_private)
        self.sock = self.watched = (_TLS.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
                                    if self.tls else sock)
        if self.expired:
            raise TimeoutError
        if self.tls:
            self.sock.do_handshake()

    def done(self):
        self.timer.cancel()
        self.close()


def _connection(url: str, deadline: float, allow_private) -> tuple[_Connection, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise FetchError(f"bad URL ({e})", retry=False) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"refused: only http and https are fetched, not {url[:100]!r}", retry=False)
    if not parts.hostname:
        raise FetchError(f"bad URL (no host): {url[:100]!r}", retry=False)
    conn = _Connection(parts.hostname, port or (443 if scheme == "https" else 80), scheme == "https", deadline,
                       allow_private)
    return conn, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _read_body(resp: http.client.HTTPResponse, max_bytes: int) -> bytes:
    length = resp.getheader("Content-Length")
    if length is not None and not length.strip().isdigit():
        raise FetchError(f"bad Content-Length header {length[:40]!r}", retry=False)
    if length is not None and int(length) > max_bytes:
        raise FetchError(f"too large ({int(length)} bytes > {max_bytes})", retry=False)
    data = bytearray()
    while len(data) <= max_bytes:
        chunk = resp.read(min(1 << 16, max_bytes + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) > max_bytes:
        raise FetchError(f"too large (> {max_bytes} bytes)", retry=False)
    if length is not None and len(data) != int(length):
        raise FetchError(f"truncated body ({len(data)} of {int(length)} bytes)", retry=True)
    return bytes(data)


def _hop(url: str, deadline: float, max_bytes: int, allow_private) -> tuple[str | None, bytes | None]:
    """One GET: (the redirect's target, None) or (None, the body)."""
    conn, target = _connection(url, deadline, allow_private)
    try:
        conn.request("GET", target, headers={"User-Agent": USER_AGENT})
        resp = conn.getresponse()
        location = resp.getheader("Location")
        if resp.status in _REDIRECTS and location:
            return urljoin(url, location), None
        if not 200 <= resp.status < 300:
            raise FetchError(f"HTTP {resp.status}", retry=resp.status in (408, 429) or resp.status >= 500)
        body = _read_body(resp, max_bytes)
        if conn.expired:  # a body cut at the deadline is no body
            raise TimeoutError
        return None, body
    except Exception:
        if conn.expired:
            raise TimeoutError from None
        raise
    finally:
        conn.done()


def fetch(url: str, timeout: float, max_bytes: int, allow_private: bool | Collection[str] = False) -> bytes:
    """GET ``url`` within ``timeout`` seconds in all, redirects followed under the address policy;
    FetchError says whether a retry may help."""
    deadline = time.monotonic() + timeout
    try:
        for _ in range(MAX_REDIRECTS + 1):
            url, body = _hop(url, deadline, max_bytes, allow_private)
            if url is None:
                return body
    except FetchError:
        raise
    except TimeoutError:  # socket.timeout too
        raise FetchError(f"timeout after {timeout}s (the whole request)", retry=True) from None
    except http.client.IncompleteRead as e:
        raise FetchError(f"truncated body ({len(e.partial)} bytes read)", retry=True) from None
    except (http.client.HTTPException, OSError) as e:
        raise FetchError(f"{type(e).__name__}: {e}", retry=True) from None
    raise FetchError(f"more than {MAX_REDIRECTS} redirects", retry=False)


# --------------------------------------------------------------------------- the catalogue


def _fetch_one(url: str, dest: Path, retries: int, backoff: float, timeout: float, max_bytes: int,
               allow_private, max_pixels: int) -> tuple[str, str | None]:
    """Download with retries; returns (status, reason)."""
    for attempt in range(retries + 1):
        try:
            data = fetch(url, timeout, max_bytes, allow_private)
            error = decode_error(data, max_pixels)
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
        problem = local_path_problem(image)
        if problem:
            return "bad_path", problem
        path = scenario_dir / image
        if not path.is_file():
            return "missing_local", f"file not found: {image}"
        error = decode_error(path, opts["max_pixels"])
        return ("local", None) if error is None else ("broken_local", error)
    dest = cached_path(scenario_dir, image)
    if dest.is_file() and decode_error(dest, opts["max_pixels"]) is None:
        return "cached", None  # resume: good files are neither fetched nor touched
    return _fetch_one(image, dest, **opts)


def download_images(scenario_dir: str | Path, workers: int = 16, retries: int = 3, backoff: float = 1.0,
                    timeout: float = 20.0, max_bytes: int = 20 << 20, allow_private: bool | Collection[str] = False,
                    max_pixels: int = MAX_PIXELS) -> dict:
    """Fetch and verify every catalogue image; write and return ``image_report.json``.

    ``allow_private``: True fetches from any address; a set of ``host:port`` strings only from those."""
    scenario_dir = Path(scenario_dir)
    rows = read_catalogue(scenario_dir)
    opts = dict(retries=retries, backoff=backoff, timeout=timeout, max_bytes=max_bytes, allow_private=allow_private,
                max_pixels=max_pixels)
    results: dict[int, tuple[str, str | None]] = {}
    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_check, scenario_dir, row, opts): row["item"] for row in rows}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="images", unit="img", disable=None):
            try:
                results[futures[fut]] = fut.result()
            except Exception as e:  # whatever one item does, it is that item's failure, not the run's
                results[futures[fut]] = "failed", f"{type(e).__name__}: {e}"[:300]
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
        "settings": {**opts, "workers": workers, "cache_dir": CACHE_DIR,
                     "allow_private": allow_private if isinstance(allow_private, bool) else sorted(allow_private)},
        "seconds": round(time.time() - t0, 3),
    }
    atomic_write_json(scenario_dir / REPORT_FILE, report)
    return report
