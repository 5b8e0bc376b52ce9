"""Shared test helpers: a tiny demo scenario with fixed embedding tables; Chromium for the browser tests."""
import json
import os
import shutil
from pathlib import Path

import numpy as np

from hafvt.data.demo import write_demo

REPO = Path(__file__).resolve().parents[1]
# the browser tests' screenshots (test_book.py, test_lab.py)
SCREENSHOTS = Path(os.environ.get("HAFVT_SCREENSHOTS", REPO / "build" / "screenshots"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


def git(cwd, *args) -> str:
    import subprocess

    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def clone_repo(dest: Path) -> Path:
    """A clone of the committed repository (what CI and a new user get), with a committer set; skips the
    test where the repository is not a git checkout."""
    import pytest

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    git(REPO, "clone", "--quiet", "--no-hardlinks", str(REPO), str(dest))
    git(dest, "config", "user.email", "t@example.org")
    git(dest, "config", "user.name", "t")
    return dest


def find_chromium() -> str | None:
    for cand in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if cand and (shutil.which(cand) or Path(cand).is_file()):
            return shutil.which(cand) or cand
    return None


def chromium_or_fail() -> str:
    """The Chromium executable for the browser tests; without one the test fails and says how to install it."""
    import pytest

    exe = find_chromium()
    if exe is None:
        pytest.fail("the browser test needs Chromium and found none. Install Debian's package "
                    "(`sudo apt-get update && sudo apt-get install -y chromium`; `make test` does this itself when run "
                    "as root) or point CHROMIUM=/path/to/chromium at another Chromium build.", pytrace=False)
    return exe


def write_fixture_tables(scenario_dir: Path, n_items: int, dim: int = 32, seed: int = 0) -> Path:
    """Fixed random image/text tables in the embedding-cache format (labelled as a test fixture)."""
    out = Path(scenario_dir) / "embeddings" / "test-fixture"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in ("image", "text"):
        t = rng.standard_normal((n_items, dim)).astype(np.float32)
        np.save(out / f"{name}.npy", t / np.linalg.norm(t, axis=1, keepdims=True))
    (out / "manifest.json").write_text(json.dumps({
        "model": "test-fixture", "pretrained": "random-init", "tables": ["image", "text"],
        "n_items": n_items, "embed_dim": dim, "label": "random tables for unit tests"}))
    return out


def tiny_demo(tmp_path: Path, seed: int = 0) -> Path:
    d = write_demo(tmp_path / "tiny", size="tiny", seed=seed, images=False)
    from hafvt.data.c2dsr import read_scenario

    from hafvt.embed.oracle import write_oracle_cache

    scn = read_scenario(d)
    write_fixture_tables(d, scn.n_items)
    write_oracle_cache(d)  # the oracle rows' tables (not an encoder cache: the fixture stays the default)
    return d


def assert_sane_run(res: dict, run_dir: Path, n_x: int, n_y: int, count_based: bool = False) -> None:
    """What a one-epoch run must satisfy, whatever it learned; a constant-score or NaN model fails.

    - results.json's metrics are those of the per-line ranks in test_ranks.npz (finite, n > 0);
    - with average-rank ties each domain's MRR beats a constant score's, 2 / (candidates + 1);
    - a model with continuous scores has no ties with its target: ties to the target (the
      C2DSR rule, which gives a constant score MRR 1) change nothing.
    """
    import math

    import numpy as np
    import torch

    from hafvt.metrics import metrics_from_ranks

    z = np.load(Path(run_dir) / "test_ranks.npz")
    n_cand = {"sampled": res["config"]["n_neg"] + 1}
    for kind in ("sampled", "full"):
        for d, code, n_dom in (("X", 0, n_x), ("Y", 1, n_y)):
            lines = z["domain"] == code
            for key, tie in (("metrics", res["tie"]), ("metrics_average_ties", "average")):
                m = res[key][kind][d]
                assert m["n"] == lines.sum() > 0 and all(math.isfinite(v) for v in m.values()), (kind, d, m)
                assert m == metrics_from_ranks(torch.from_numpy(z[f"{kind}_{tie}"][lines])), (kind, d, key)
            avg = res["metrics_average_ties"][kind][d]["mrr"]
            assert avg > 2 / (n_cand.get(kind, n_dom) + 1), (kind, d, avg)
            if not count_based:
                assert res["metrics"][kind][d] == res["metrics_average_ties"][kind][d], (kind, d)


def interrupt_at(monkeypatch, epoch: int) -> None:
    """Make ``hafvt.train.run`` stop with KeyboardInterrupt when it starts training ``epoch`` (a crash
    after the previous epoch's checkpoint); ``monkeypatch.undo()`` restores training."""
    import hafvt.train as train_mod

    real_epoch = train_mod.train_epoch

    def crash(model, opt, views, cfg, seed, e, *a, **kw):
        if e == epoch:
            raise KeyboardInterrupt
        return real_epoch(model, opt, views, cfg, seed, e, *a, **kw)

    monkeypatch.setattr(train_mod, "train_epoch", crash)
