"""Where a number comes from: commit, config, seed, data, encoder, device, versions."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import hafvt
from hafvt.data.c2dsr import data_hash
from hafvt.data.labels import scenario_kind


def git_commit(repo: Path | None = None) -> dict:
    """The commit of the hafvt checkout, and whether it had uncommitted changes."""
    repo = repo or Path(hafvt.__file__).resolve().parents[1]
    if os.environ.get("HAFVT_GIT_COMMIT"):  # a copy of the tree without .git (e.g. a remote GPU machine)
        return {"commit": os.environ["HAFVT_GIT_COMMIT"], "dirty": None}
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, timeout=10)  # noqa: E731
        commit = run("rev-parse", "HEAD")
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = bool(run("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": commit.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def device_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()})"


def versions() -> dict:
    out = {"python": sys.version.split()[0], "hafvt": hafvt.__version__, "torch": torch.__version__, "numpy": np.__version__}
    try:
        import open_clip

        out["open_clip"] = open_clip.__version__
    except ImportError:
        pass
    return out


def provenance(scenario_dir: Path, cfg_dict: dict, cfg_hash: str, seed: int, device: str, embedding_manifest: dict | None) -> dict:
    kind = scenario_kind(scenario_dir)
    return {
        **git_commit(),
        "config_hash": cfg_hash,
        "seed": seed,
        "scenario": str(scenario_dir),
        "data_hash": data_hash(scenario_dir),
        "data_kind": kind["kind"],
        "data_label": kind["label"],
        "comparable_with_paper": kind["kind"] == "benchmark",
        "embeddings": embedding_manifest,
        "device": device_name(device),
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg_dict,
    }
