"""The item catalogue of a scenario: ``catalogue.jsonl``, one JSON object per item in global id order.

Each row is ``{"item": id, "domain": "X"|"Y", "asin": str, "title": str|null, "image": str|null}``:
X items first (``0..n_x-1``), then Y items offset by ``n_x``. ``image`` is an http(s) URL or a
path relative to the scenario directory. Titles and images feed the CLIP embeddings (hafvt.embed).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hafvt.io import atomic_write_text

CATALOGUE_FILE = "catalogue.jsonl"
FIELDS = ("item", "domain", "asin", "title", "image")


class CatalogueError(ValueError):
    """A malformed catalogue; the message starts with ``path:line:``."""


def catalogue_path(scenario_dir: str | Path) -> Path:
    return Path(scenario_dir) / CATALOGUE_FILE


def is_url(image: str | None) -> bool:
    return bool(image) and image.split(":", 1)[0].lower() in ("http", "https")


def _check_row(row, expect_item: int, n_x: int | None, n_y: int | None) -> str | None:
    """The problem with one row, or None when it is well formed."""
    if not isinstance(row, dict):
        return "expected a JSON object"
    missing = [f for f in FIELDS if f not in row]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if not isinstance(row["item"], int) or row["item"] != expect_item:
        return f"item {row['item']!r} should be {expect_item} (rows are in global item-id order)"
    if row["domain"] not in ("X", "Y"):
        return f"domain {row['domain']!r} should be 'X' or 'Y'"
    if n_x is not None and row["domain"] != ("X" if expect_item < n_x else "Y"):
        return f"item {expect_item} is in domain {'X' if expect_item < n_x else 'Y'} (n_x={n_x}), row says {row['domain']}"
    if not isinstance(row["asin"], str) or not row["asin"]:
        return "asin must be a non-empty string"
    for f in ("title", "image"):
        if row[f] is not None and not isinstance(row[f], str):
            return f"{f} must be a string or null"
    return None


def validate_catalogue(rows: list[dict], n_x: int | None = None, n_y: int | None = None, where: str = "catalogue") -> None:
    """Raise CatalogueError naming the first bad row (``where:line``); checks counts when n_x/n_y are given."""
    seen_y = False
    for k, row in enumerate(rows):
        problem = _check_row(row, k, n_x, n_y)
        if problem is None and row["domain"] == "X" and seen_y:
            problem = "an X item after a Y item (X items come first)"
        if problem:
            raise CatalogueError(f"{where}:{k + 1}: {problem}")
        seen_y = seen_y or row["domain"] == "Y"
    if n_x is not None and n_y is not None and len(rows) != n_x + n_y:
        raise CatalogueError(f"{where}: {len(rows)} rows, but the scenario has {n_x} + {n_y} = {n_x + n_y} items")


def read_catalogue(scenario_dir: str | Path, n_x: int | None = None, n_y: int | None = None) -> list[dict]:
    """Read and validate ``<scenario_dir>/catalogue.jsonl``; errors name the file and line."""
    path = catalogue_path(scenario_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no item catalogue; build one with `hafvt catalogue build ...` or attach metadata to a C2DSR "
            f"release with `hafvt catalogue attach {Path(scenario_dir)} --meta-x ... --meta-y ...`")
    rows = []
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise CatalogueError(f"{path}:{no}: not JSON ({e.msg} at column {e.colno})") from None
    validate_catalogue(rows, n_x, n_y, where=str(path))
    return rows


def write_catalogue(scenario_dir: str | Path, rows: list[dict]) -> Path:
    """Validate and write the catalogue atomically (the old file or the whole new one)."""
    rows = [{f: row.get(f) for f in FIELDS} for row in rows]
    validate_catalogue(rows, where=str(catalogue_path(scenario_dir)))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return atomic_write_text(catalogue_path(scenario_dir), text)


def item_list_hash(rows: list[dict]) -> str:
    """sha256 over (item, domain, asin) of every row: names the item list an embedding cache belongs to."""
    h = hashlib.sha256()
    for r in rows:
        h.update(f"{r['item']}\t{r['domain']}\t{r['asin']}\n".encode())
    return h.hexdigest()


def domain_counts(rows: list[dict]) -> tuple[int, int]:
    n_x = sum(r["domain"] == "X" for r in rows)
    return n_x, len(rows) - n_x
