"""The C2DSR benchmark files: read, validate, write (PROTOCOL.md, "Files of one scenario").

A scenario directory holds ``Alist.txt``/``Blist.txt`` (items of domains X and Y),
``userlist.txt`` and the splits ``traindata_new.txt`` (optional), ``validdata_new.txt``,
``testdata_new.txt``. Item ids in sequences are global: X items ``0..n_x-1``, Y items
``n_x..n_x+n_y-1``. Tokens are stable-sorted by timestamp on reading; the last item of a
line is its target.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from hafvt.io import atomic_write_text

SPLIT_FILES = {"train": "traindata_new.txt", "valid": "validdata_new.txt", "test": "testdata_new.txt"}
REQUIRED_FILES = ("Alist.txt", "Blist.txt", "userlist.txt", SPLIT_FILES["valid"], SPLIT_FILES["test"])
# The release writes dates in UTC+8 (1364428800 -> "2013-03-28 08:00:00").
RELEASE_TZ = timezone(timedelta(hours=8))


class FormatError(ValueError):
    """A malformed benchmark file; the message starts with ``path:line:``."""

    def __init__(self, path, line: int | None, message: str):
        self.path, self.line = Path(path), line
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


@dataclass
class ItemTable:
    """Items of one domain; the local id is the position in these lists."""

    original_id: list[str]
    asin: list[str]

    def __len__(self) -> int:
        return len(self.asin)


@dataclass
class Sequences:
    """One split in CSR form: sequence ``i`` is ``items[offsets[i]:offsets[i+1]]`` in time order."""

    uid: np.ndarray
    sample_id: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    dates: np.ndarray  # the date strings of the file, kept for a byte-faithful write-back

    def __len__(self) -> int:
        return len(self.uid)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        return self.items[self.offsets[i] : self.offsets[i + 1]]

    @property
    def targets(self) -> np.ndarray:
        """The last item of every line (the item to predict in valid/test)."""
        return self.items[self.offsets[1:] - 1]

    def target_domains(self, n_x: int) -> np.ndarray:
        """0 where the target is an X item, 1 where it is a Y item."""
        return (self.targets >= n_x).astype(np.int64)

    def subset(self, rows: np.ndarray) -> "Sequences":
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(rows) else np.zeros(0, np.int64)
        return Sequences(
            uid=self.uid[rows].copy(),
            sample_id=self.sample_id[rows].copy(),
            offsets=np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64),
            items=self.items[idx],
            ts=self.ts[idx],
            dates=self.dates[idx],
        )

    @classmethod
    def from_lists(cls, uids, sample_ids, item_lists, ts_lists, dates=None) -> "Sequences":
        """Build a split from Python lists; items are stable-sorted by timestamp."""
        items_out, ts_out, dates_out, offsets = [], [], [], [0]
        for k, (items, ts) in enumerate(zip(item_lists, ts_lists)):
            ts = np.asarray(ts, dtype=np.int64)
            order = np.argsort(ts, kind="stable")
            items_out.append(np.asarray(items, dtype=np.int64)[order])
            ts_out.append(ts[order])
            d = np.asarray(dates[k], dtype=object)[order] if dates is not None else np.array([format_date(t) for t in ts[order]], dtype=object)
            dates_out.append(d)
            offsets.append(offsets[-1] + len(ts))
        cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
        return cls(
            uid=np.asarray(uids, dtype=np.int64),
            sample_id=np.asarray(sample_ids, dtype=np.int64),
            offsets=np.asarray(offsets, dtype=np.int64),
            items=cat(items_out, np.int64),
            ts=cat(ts_out, np.int64),
            dates=cat(dates_out, object),
        )

    def equals(self, other: "Sequences") -> bool:
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in ("uid", "sample_id", "offsets", "items", "ts", "dates"))


@dataclass
class Scenario:
    """Two domains' items, the users, and the train (optional), valid and test splits."""

    items_x: ItemTable
    items_y: ItemTable
    users: list[tuple[str, int]]
    valid: Sequences
    test: Sequences
    train: Sequences | None = None
    name: str = "scenario"
    source: Path | None = None
    report: dict = field(default_factory=dict)  # what a lenient read skipped, by reason

    @property
    def n_x(self) -> int:
        return len(self.items_x)

    @property
    def n_y(self) -> int:
        return len(self.items_y)

    @property
    def n_items(self) -> int:
        return self.n_x + self.n_y

    @property
    def pad(self) -> int:
        """The padding id used in sequence tensors (PROTOCOL.md)."""
        return self.n_items

    def split(self, name: str) -> Sequences:
        seqs = getattr(self, name)
        if seqs is None:
            raise FileNotFoundError(f"{self.name}: the {name} split is absent ({SPLIT_FILES[name]} was not found)")
        return seqs

    def domain_of(self, items: np.ndarray) -> np.ndarray:
        return (np.asarray(items) >= self.n_x).astype(np.int64)

    def equals(self, other: "Scenario") -> bool:
        same_items = self.items_x == other.items_x and self.items_y == other.items_y and self.users == other.users
        same_train = (self.train is None) == (other.train is None) and (self.train is None or self.train.equals(other.train))
        return same_items and same_train and self.valid.equals(other.valid) and self.test.equals(other.test)


INT64 = (-(2 ** 63), 2 ** 63 - 1)
UNIX_TS = (-62135596800, 253402300799)  # 0001-01-01 .. 9999-12-31 (UTC): what a date can show


def format_date(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), RELEASE_TZ).strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------- reading


def _lines(path: Path):
    """Yield (line number, text) of a UTF-8 file; bad bytes raise FormatError with the line."""
    with open(path, "rb") as f:
        for no, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise FormatError(path, no, f"bytes that are not UTF-8 at column {e.start + 1}") from None
            text = text.rstrip("\r\n")
            if text.strip():
                yield no, text


def _read_items(path: Path) -> ItemTable:
    original, asin = [], []
    for no, text in _lines(path):
        cols = text.split("\t")
        if len(cols) != 3:
            raise FormatError(path, no, f"expected 3 tab-separated columns (original_id, ASIN, local_id), got {len(cols)}")
        if not cols[2].strip().isdigit() or int(cols[2]) != len(asin):
            raise FormatError(path, no, f"local_id {cols[2]!r} should be {len(asin)} (the 0-based line number)")
        original.append(cols[0])
        asin.append(cols[1])
    return ItemTable(original, asin)


def _read_users(path: Path) -> list[tuple[str, int]]:
    users, seen = [], {}
    for no, text in _lines(path):
        cols = text.split("\t")
        if len(cols) != 2 or not cols[1].strip().lstrip("-").isdigit():
            raise FormatError(path, no, "expected 'reviewer_id<TAB>uid' with an integer uid")
        uid = int(cols[1])
        if uid in seen or cols[0] in seen:
            raise FormatError(path, no, f"user {cols[0]!r} / uid {uid} is listed twice (first on line {seen.get(uid, seen.get(cols[0]))})")
        seen[uid] = seen[cols[0]] = no
        users.append((cols[0], uid))
    return users


def _parse_line(path: Path, no: int, text: str, n_items: int):
    cols = [c for c in text.split("\t") if c.strip() != ""]
    if len(cols) < 2:
        raise FormatError(path, no, "expected 'uid<TAB>sample_id<TAB>item|ts|date|...'")
    try:
        uid, sample = int(cols[0]), int(cols[1])
    except ValueError:
        raise FormatError(path, no, f"uid and sample_id must be integers, got {cols[0]!r}, {cols[1]!r}") from None
    if not (INT64[0] <= uid <= INT64[1] and INT64[0] <= sample <= INT64[1]):
        raise FormatError(path, no, f"uid {cols[0]} or sample_id {cols[1]} does not fit a 64-bit integer")
    items, ts, dates = [], [], []
    for k, tok in enumerate(cols[2:], start=1):
        parts = tok.split("|")
        if len(parts) != 4 or parts[3] != "":
            raise FormatError(path, no, f"token {k} {tok!r} is not 'item|unix_ts|date|'")
        try:
            item, t = int(parts[0]), int(parts[1])
        except ValueError:
            raise FormatError(path, no, f"token {k} {tok!r}: item and unix_ts must be integers") from None
        if not 0 <= item < n_items:
            raise FormatError(path, no, f"token {k}: item id {item} out of range 0..{n_items - 1}")
        if not UNIX_TS[0] <= t <= UNIX_TS[1]:
            raise FormatError(path, no, f"token {k}: unix_ts {t} is not a date of years 1-9999")
        items.append(item)
        ts.append(t)
        dates.append(parts[2])
    if len(items) < 2:
        raise FormatError(path, no, f"a sequence needs at least two items (history and target), got {len(items)}")
    return uid, sample, items, ts, dates


def read_split(path: Path, n_items: int, on_error: str = "raise", report: dict | None = None) -> Sequences:
    """Read one split file. ``on_error="skip"`` skips malformed lines and counts them in ``report``."""
    uids, samples, item_lists, ts_lists, date_lists = [], [], [], [], []
    for no, text in _lines(path):
        try:
            uid, sample, items, ts, dates = _parse_line(path, no, text, n_items)
        except FormatError as e:
            if on_error != "skip":
                raise
            if report is not None:
                report.setdefault(path.name, []).append(str(e))
            continue
        uids.append(uid)
        samples.append(sample)
        item_lists.append(items)
        ts_lists.append(ts)
        date_lists.append(dates)
    return Sequences.from_lists(uids, samples, item_lists, ts_lists, date_lists)


def read_scenario(path: str | Path, on_error: str = "raise") -> Scenario:
    """Read a scenario directory; every missing required file is named in the error."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"scenario directory not found: {path}")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: missing required file(s): {', '.join(missing)}")
    items_x, items_y = _read_items(path / "Alist.txt"), _read_items(path / "Blist.txt")
    n_items = len(items_x) + len(items_y)
    report: dict = {}
    splits = {}
    for split, fname in SPLIT_FILES.items():
        if (path / fname).is_file():
            splits[split] = read_split(path / fname, n_items, on_error, report)
    return Scenario(
        items_x=items_x,
        items_y=items_y,
        users=_read_users(path / "userlist.txt"),
        train=splits.get("train"),
        valid=splits["valid"],
        test=splits["test"],
        name=path.name,
        source=path,
        report={k: {"skipped": len(v), "first": v[:5]} for k, v in report.items()},
    )


# --------------------------------------------------------------------------- writing


def split_text(seqs: Sequences) -> str:
    out = []
    for i in range(len(seqs)):
        a, b = seqs.offsets[i], seqs.offsets[i + 1]
        toks = "\t".join(f"{it}|{t}|{d}|" for it, t, d in zip(seqs.items[a:b], seqs.ts[a:b], seqs.dates[a:b]))
        out.append(f"{seqs.uid[i]}\t{seqs.sample_id[i]}\t{toks}\n")
    return "".join(out)


def write_scenario(scn: Scenario, path: str | Path) -> Path:
    """Write the C2DSR files (atomically, one by one); reading them back gives ``scn``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for fname, table in (("Alist.txt", scn.items_x), ("Blist.txt", scn.items_y)):
        atomic_write_text(path / fname, "".join(f"{o}\t{a}\t{i}\n" for i, (o, a) in enumerate(zip(table.original_id, table.asin))))
    atomic_write_text(path / "userlist.txt", "".join(f"{r}\t{u}\n" for r, u in scn.users))
    for split, fname in SPLIT_FILES.items():
        seqs = getattr(scn, split)
        if seqs is not None:
            atomic_write_text(path / fname, split_text(seqs))
    return path


def data_hash(path: str | Path, extra_files=()) -> str:
    """sha256 over the scenario's benchmark files and ``extra_files`` (e.g. the saved candidates a run
    scored with; names relative to the scenario, and bytes), for provenance."""
    path = Path(path)
    h = hashlib.sha256()
    extra = [Path(f).relative_to(path).as_posix() for f in extra_files]
    for fname in ("Alist.txt", "Blist.txt", "userlist.txt", *SPLIT_FILES.values(), *extra):
        p = path / fname
        if p.is_file():
            h.update(fname.encode() + b"\0")
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()
