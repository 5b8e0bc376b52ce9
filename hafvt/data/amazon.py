"""From the raw Amazon review dumps to a C2DSR scenario with an item catalogue.

Both public formats are read, gzipped or not, one line at a time (memory does not grow with
the file, only with what is kept):

- 2014 (McAuley et al.): ``reviews_<Cat>.json.gz`` (JSON lines: reviewerID, asin, unixReviewTime)
  and ``meta_<Cat>.json.gz`` whose lines are Python dict literals (parsed with
  ``ast.literal_eval``, never ``eval``); image in ``imUrl``.
- 2018 (Ni et al.): ``<Cat>.json.gz`` and ``meta_<Cat>.json.gz``, JSON lines; images in
  ``imageURLHighRes`` (preferred: ``imageURL`` holds thumbnails) or ``imageURL``.

The scenario follows the papers (HAF-VT section 4, after pi-Net/MIFN): users with interactions
in both domains; users and items with fewer than 10 interactions dropped; cross-domain
sequences with at least 3 items of each domain; time order; each user's latest sequence goes
to valid or test (users split equally at random), the others to train. The papers do not say
how a user's history is cut into sequences: here it is cut into windows of ``max_len`` (15,
C2DSR's maxlen) consecutive items, anchored at the newest item.
"""
from __future__ import annotations

import ast
import gzip
import html
import json
import os
import random
import re
import zlib
from array import array
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from hafvt.data.c2dsr import ItemTable, Scenario, Sequences, read_scenario, write_scenario
from hafvt.data.catalogue import write_catalogue
from hafvt.io import atomic_write_json


# --------------------------------------------------------------------------- streaming lines


def iter_lines(path: str | Path, desc: str | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line) of a plain or gzipped file, with a progress bar on bytes read."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw) if gz else raw
        with tqdm(total=size, unit="B", unit_scale=True, desc=desc or path.name, disable=None, leave=False) as bar:
            no = 0
            try:
                for no, line in enumerate(stream, start=1):
                    if no % 8192 == 0:
                        bar.update(raw.tell() - bar.n)
                    if line.strip():
                        yield no, line
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise ValueError(f"{path}: after line {no}: the gzip stream is truncated or damaged ({e})") from None
            bar.update(size - bar.n)


def parse_record(line: bytes | str) -> dict:
    """One dump line as a dict: JSON first, then a Python literal (2014 metadata); never ``eval``."""
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = ast.literal_eval(text.strip())
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict, got {type(obj).__name__}")
    return obj


def iter_records(path: str | Path, stats: Counter | None = None, desc: str | None = None) -> Iterator[dict]:
    """Every parseable record of a dump; unparseable lines are counted in ``stats['bad_lines']``."""
    for no, line in iter_lines(path, desc):
        try:
            yield parse_record(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            if stats is not None:
                stats["bad_lines"] += 1


def iter_reviews(path: str | Path, stats: Counter | None = None) -> Iterator[tuple[str, str, int]]:
    """(reviewerID, asin, unixReviewTime) of every review (2014 and 2018 use the same keys)."""
    for rec in iter_records(path, stats, desc=f"reviews {Path(path).name}"):
        try:
            yield str(rec["reviewerID"]), str(rec["asin"]), int(rec["unixReviewTime"])
        except (KeyError, TypeError, ValueError):
            if stats is not None:
                stats["reviews_without_user_item_time"] += 1


_TAGS = re.compile(r"<[^>]*>")


def clean_title(title) -> str | None:
    """HTML entities decoded, tags removed, whitespace collapsed; empty -> None."""
    if not isinstance(title, str):
        return None
    title = " ".join(_TAGS.sub(" ", html.unescape(title)).split())
    return title or None


def meta_image(rec: dict) -> str | None:
    """The image URL of a metadata record: 2018 ``imageURLHighRes``/``imageURL`` lists, 2014 ``imUrl``."""
    for key in ("imageURLHighRes", "imageURL", "imUrl"):
        value = rec.get(key)
        if isinstance(value, list):
            value = next((v for v in value if isinstance(v, str) and v.strip()), None)
        if isinstance(value, str) and value.strip().lower().startswith(("http://", "https://")):
            return value.strip()
    return None


def iter_meta(path: str | Path, wanted: set[str] | None = None, stats: Counter | None = None):
    """(asin, title, image URL) of the metadata records whose ASIN is in ``wanted`` (all if None)."""
    for rec in iter_records(path, stats, desc=f"meta {Path(path).name}"):
        asin = rec.get("asin")
        if isinstance(asin, str) and (wanted is None or asin in wanted):
            yield asin, clean_title(rec.get("title")), meta_image(rec)


# --------------------------------------------------------------------------- the scenario


@dataclass
class BuildConfig:
    min_interactions: int = 10  # users and items with fewer are dropped (papers)
    min_per_domain: int = 3  # items of each domain a sequence needs (papers)
    max_len: int = 15  # items per sequence window (C2DSR maxlen; the papers are silent)
    seed: int = 0  # draws which users' latest sequences go to valid and which to test


class _Interner(dict):
    """String -> dense int id, in order of first sight."""

    def id(self, key: str) -> int:
        value = self.get(key)
        if value is None:
            value = self[key] = len(self)
        return value


def _read_domains(reviews_x: Path, reviews_y: Path, stats: Counter):
    """Interactions of users who appear in both dumps: three streaming passes, smaller dump first.

    Returns interners (users, asins per domain) and arrays user, domain, item, ts in read order.
    """
    files = {0: Path(reviews_x), 1: Path(reviews_y)}
    small = 0 if files[0].stat().st_size <= files[1].stat().st_size else 1
    large = 1 - small
    users_small = {u for u, _, _ in iter_reviews(files[small])}
    users, asins = _Interner(), {0: _Interner(), 1: _Interner()}
    cols = {k: array("q") for k in ("user", "domain", "item", "ts")}
    users_large = set()

    def keep(u, a, t, d):
        cols["user"].append(users.id(u))
        cols["domain"].append(d)
        cols["item"].append(asins[d].id(a))
        cols["ts"].append(t)

    for u, a, t in iter_reviews(files[large], stats):
        if u in users_small:
            users_large.add(u)
            keep(u, a, t, large)
        else:
            stats["reviews_of_one_domain_users"] += 1
    both = users_large  # users of the small dump seen in the large one
    stats["users_in_both_domains"] = len(both)
    stats[f"users_only_in_{'XY'[small]}"] = len(users_small) - len(both)
    del users_small
    for u, a, t in iter_reviews(files[small], stats):
        if u in both:
            keep(u, a, t, small)
        else:
            stats["reviews_of_one_domain_users"] += 1
    arr = {k: np.frombuffer(v, dtype=np.int64).copy() for k, v in cols.items()}
    return users, asins, arr


def _count_filter(arr: dict, n_min: int, stats: Counter) -> dict:
    """Drop items and users with fewer than ``n_min`` interactions (counted on the same data)."""
    item_key = arr["domain"] * (arr["item"].max(initial=0) + 1) + arr["item"]
    _, item_inv, item_cnt = np.unique(item_key, return_inverse=True, return_counts=True)
    _, user_inv, user_cnt = np.unique(arr["user"], return_inverse=True, return_counts=True)
    item_ok, user_ok = item_cnt[item_inv] >= n_min, user_cnt[user_inv] >= n_min
    stats["items_below_min"] = int((item_cnt < n_min).sum())
    stats["users_below_min"] = int((user_cnt < n_min).sum())
    stats["interactions_dropped_by_count"] = int((~(item_ok & user_ok)).sum())
    return {k: v[item_ok & user_ok] for k, v in arr.items()}


def _windows(order: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Cut a time-ordered index list into windows of ``max_len``, the last one ending at the newest item."""
    ends = list(range(len(order), 0, -max_len))
    return [order[max(e - max_len, 0) : e] for e in reversed(ends)]


def build_scenario(reviews_x: str | Path, reviews_y: str | Path, cfg: BuildConfig | None = None, name: str = "scenario"):
    """Build the papers' scenario from two review dumps; returns (Scenario, stats, X ASINs, Y ASINs)."""
    cfg = cfg or BuildConfig()
    stats: Counter = Counter()
    users, asins, arr = _read_domains(Path(reviews_x), Path(reviews_y), stats)
    # the same review twice (same user, item, day) counts once
    key = np.stack([arr["user"], arr["domain"], arr["item"], arr["ts"]], axis=1)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = np.zeros(len(key), bool)
    keep[first] = True
    stats["duplicate_reviews"] = int((~keep).sum())
    arr = {k: v[keep] for k, v in arr.items()}
    arr = _count_filter(arr, cfg.min_interactions, stats)

    # per user: stable sort by time (ties keep read order), cut into windows, keep cross-domain ones
    by_user = defaultdict(list)
    for row, u in enumerate(arr["user"]):
        by_user[int(u)].append(row)
    user_names = list(users)
    kept: dict[str, list[np.ndarray]] = {}
    for u, rows in by_user.items():
        rows = np.asarray(rows)
        order = rows[np.argsort(arr["ts"][rows], kind="stable")]
        if not np.array_equal(order, rows):
            stats["users_reordered_by_time"] += 1
        seqs = []
        for w in _windows(order, cfg.max_len):
            n_y = int(arr["domain"][w].sum())
            if len(w) - n_y >= cfg.min_per_domain and n_y >= cfg.min_per_domain:
                seqs.append(w)
            else:
                stats["sequences_below_min_per_domain"] += 1
        if seqs:
            kept[user_names[u]] = seqs
        else:
            stats["users_without_a_sequence"] += 1

    # the latest sequence of each user to valid or test, half and half; the rest to train
    reviewers = sorted(kept)
    shuffled = reviewers[:]
    random.Random(cfg.seed).shuffle(shuffled)
    valid_users = set(shuffled[: len(shuffled) // 2])
    # global ids: X then Y, numbered by first appearance in (user, time) order
    local = {0: {}, 1: {}}
    for r in reviewers:
        for w in kept[r]:
            for d, it in zip(arr["domain"][w], arr["item"][w]):
                local[int(d)].setdefault(int(it), len(local[int(d)]))
    n_x = len(local[0])
    splits = {s: ([], [], [], []) for s in ("train", "valid", "test")}
    sample = 0
    for uid, r in enumerate(reviewers):
        for k, w in enumerate(kept[r]):
            split = "train" if k < len(kept[r]) - 1 else ("valid" if r in valid_users else "test")
            ids = [local[int(d)][int(it)] + (n_x if d else 0) for d, it in zip(arr["domain"][w], arr["item"][w])]
            for col, v in zip(splits[split], (uid, sample, ids, arr["ts"][w].tolist())):
                col.append(v)
            sample += 1
    names = {d: list(asins[d]) for d in (0, 1)}
    tables = {}
    for d in (0, 1):
        by_local = sorted(local[d], key=local[d].get)
        tables[d] = ItemTable(original_id=[str(i) for i in by_local], asin=[names[d][i] for i in by_local])
    seqs = {s: Sequences.from_lists(*cols) for s, cols in splits.items()}
    scn = Scenario(items_x=tables[0], items_y=tables[1], users=[(r, i) for i, r in enumerate(reviewers)],
                   train=seqs["train"], valid=seqs["valid"], test=seqs["test"], name=name)
    stats.update({"n_users": len(reviewers), "n_items_X": n_x, "n_items_Y": len(local[1]),
                  "train": len(seqs["train"]), "valid": len(seqs["valid"]), "test": len(seqs["test"])})
    return scn, dict(stats), tables[0].asin, tables[1].asin


# --------------------------------------------------------------------------- catalogue


def _lookup_meta(meta_files: Iterable[str | Path], wanted: set[str], stats: Counter) -> dict[str, tuple]:
    found: dict[str, tuple] = {}
    for path in meta_files:
        for asin, title, image in iter_meta(path, wanted - found.keys(), stats):
            found.setdefault(asin, (title, image))
    return found


def catalogue_rows(asins_x: list[str], asins_y: list[str], meta_x, meta_y) -> tuple[list[dict], dict]:
    """Catalogue rows in global id order from the metadata dumps of each domain, and counts."""
    stats: Counter = Counter()
    rows = []
    for domain, asins, meta in (("X", asins_x, meta_x), ("Y", asins_y, meta_y)):
        found = _lookup_meta([meta] if isinstance(meta, (str, Path)) else meta, set(asins), stats)
        for asin in asins:
            title, image = found.get(asin, (None, None))
            rows.append({"item": len(rows), "domain": domain, "asin": asin, "title": title, "image": image})
        stats[f"{domain}_without_metadata"] = sum(a not in found for a in asins)
    stats["without_title"] = sum(r["title"] is None for r in rows)
    stats["without_image_url"] = sum(r["image"] is None for r in rows)
    return rows, dict(stats)


def build_from_dumps(out_dir, reviews_x, meta_x, reviews_y, meta_y, cfg: BuildConfig | None = None) -> dict:
    """Write a scenario (C2DSR files + catalogue.jsonl + build_report.json) from four dumps."""
    cfg = cfg or BuildConfig()
    out_dir = Path(out_dir)
    scn, stats, asins_x, asins_y = build_scenario(reviews_x, reviews_y, cfg, name=out_dir.name)
    if not scn.users:
        raise ValueError(f"no user is left after the filters ({stats}); check the dumps and the thresholds")
    write_scenario(scn, out_dir)
    rows, meta_stats = catalogue_rows(asins_x, asins_y, meta_x, meta_y)
    write_catalogue(out_dir, rows)
    report = {"config": asdict(cfg), "filters": stats, "catalogue": meta_stats,
              "sources": {k: os.fspath(v) for k, v in
                          {"reviews_x": reviews_x, "meta_x": meta_x, "reviews_y": reviews_y, "meta_y": meta_y}.items()}}
    atomic_write_json(out_dir / "build_report.json", report)
    return report


def attach_catalogue(scenario_dir, meta_x, meta_y) -> dict:
    """Write ``catalogue.jsonl`` for an existing C2DSR release, matching its ASIN column to metadata."""
    scn = read_scenario(scenario_dir)
    rows, stats = catalogue_rows(scn.items_x.asin, scn.items_y.asin, meta_x, meta_y)
    write_catalogue(scenario_dir, rows)
    return stats
