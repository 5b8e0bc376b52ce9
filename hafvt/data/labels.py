"""What kind of data a scenario directory holds, so every number derived from it is labelled."""
from __future__ import annotations

import json
from pathlib import Path

# Marker files written next to the benchmark files by the generators.
MARKERS = {"demo.json": "demo", "derived.json": "derived"}


def scenario_kind(path: str | Path) -> dict:
    """``{"kind": "demo"|"derived"|"benchmark", "label": str, ...marker contents}``."""
    path = Path(path)
    for fname, kind in MARKERS.items():
        if (path / fname).is_file():
            info = json.loads((path / fname).read_text())
            return {"kind": kind, "label": info.get("label", kind), **{k: v for k, v in info.items() if k != "label"}}
    return {"kind": "benchmark", "label": "C2DSR benchmark files"}


def comparable_with_paper(path: str | Path) -> bool:
    return scenario_kind(path)["kind"] == "benchmark"
