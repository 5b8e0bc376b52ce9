"""Nothing half-written survives a kill: atomic files are whole or absent, logs lose at most a torn last
line (dropped on read), and a resumed run removes what its killed attempt left."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hafvt.io import TEMP_FILE, remove_stale_temps
from hafvt.viz import read_jsonl
from helpers import REPO, tiny_demo

WRITER = r"""
import json, sys
from pathlib import Path
from hafvt.io import append_line, atomic_save_npy, atomic_write_json
import numpy as np
d = Path(sys.argv[1]); payload = "x" * (1 << 20)
(d / "started").write_text("")
for i in range(10 ** 6):
    atomic_write_json(d / f"r{i % 3}.json", {"i": i, "payload": payload})
    atomic_save_npy(d / "a.npy", np.full(1 << 18, i, dtype=np.int64))
    append_line(d / "log.jsonl", json.dumps({"i": i, "payload": payload[: 1 << 16]}))
"""


def _kill_writer_once(d: Path, rng: random.Random) -> bool:
    """Start the writer, SIGKILL it at a random moment; True if it left a temporary file behind."""
    d.mkdir()
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(d)], cwd=REPO)
    deadline = time.monotonic() + 60
    while not (d / "started").exists():
        assert p.poll() is None and time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.005)
    time.sleep(rng.uniform(0, 0.3))
    p.send_signal(signal.SIGKILL)
    p.wait()
    left = [f for f in d.iterdir() if TEMP_FILE.match(f.name)]
    for f in d.glob("r*.json"):  # whole, or absent
        rec = json.loads(f.read_text())
        assert len(rec["payload"]) == 1 << 20
    if (d / "a.npy").exists():
        a = np.load(d / "a.npy")
        assert a.shape == (1 << 18,) and (a == a[0]).all()
    if (d / "log.jsonl").exists():
        recs = read_jsonl(d / "log.jsonl")  # a torn last line is dropped
        assert [r["i"] for r in recs] == list(range(len(recs)))
    assert sorted(remove_stale_temps(d)) == sorted(left)
    assert not [f for f in d.iterdir() if f.name.endswith(".tmp")]
    return bool(left)


@pytest.mark.slow
def test_a_writer_killed_at_random_points_leaves_whole_files_or_none(tmp_path):
    rng = random.Random(0)
    left = [_kill_writer_once(tmp_path / f"k{k}", rng) for k in range(25)]
    # the files are large (1 MiB, fsync'd), so most of the writer's time is inside a write: kills must
    # have landed there, or the test did not test the cleanup
    assert sum(left) >= 3, f"only {sum(left)} of 25 kills landed inside a write"


def test_read_jsonl_drops_a_torn_last_line_and_names_a_bad_line(tmp_path):
    f = tmp_path / "log.jsonl"
    f.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_jsonl(f) == [{"a": 1}, {"a": 2}]
    f.write_text('{"a": 1}\nnot json\n{"a": 3}\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2: not a JSON line"):
        read_jsonl(f)


def test_only_temporary_files_of_atomic_writes_are_removed(tmp_path):
    keep = ["results.json", ".hidden", "x.tmp", ".results.json.tmp", "notes.txt"]
    for n in keep + [".results.json.ab_c1234.tmp", ".log.jsonl.Zz9_0000.tmp"]:
        (tmp_path / n).write_text("")
    assert {p.name for p in remove_stale_temps(tmp_path)} == {".results.json.ab_c1234.tmp", ".log.jsonl.Zz9_0000.tmp"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_results_files_are_readable_by_others(tmp_path):
    from hafvt.io import atomic_write_json

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


TRAIN = ("import sys\nfrom hafvt.config import load_config\nfrom hafvt.train import run\n"
         "cfg = load_config('configs/sasrec.yaml', overrides={'epochs': 4, 'q': 16, 'n_blocks': 1, 'eval_every': 1}).validate()\n"
         "run(sys.argv[1], cfg, sys.argv[2], progress=False)\n")


@pytest.mark.slow
def test_a_training_run_killed_at_random_points_resumes_to_the_same_numbers(tmp_path):
    d = tiny_demo(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, out = tmp_path / "ref", tmp_path / "killed"
    subprocess.run([sys.executable, "-c", TRAIN, str(d), str(ref)], cwd=REPO, env=env, check=True)
    rng = random.Random(1)
    kills = 0
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", TRAIN, str(d), str(out)], cwd=REPO, env=env)
        deadline = time.monotonic() + 120  # kill once the run has begun writing (its log exists), at a random moment
        while not (out / "log.jsonl").exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.5))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
        if (out / "results.json").exists():
            break
        (out / "log.jsonl").unlink(missing_ok=True)  # the next attempt must start writing again to be killed
    subprocess.run([sys.executable, "-c", TRAIN, str(d), str(out)], cwd=REPO, env=env, check=True)
    assert kills >= 1
    assert not [f.name for f in out.iterdir() if f.name.endswith(".tmp")]
    a, b = (json.loads((x / "results.json").read_text()) for x in (ref, out))
    assert a["metrics"] == b["metrics"] and [e["train_loss"] for e in a["history"]] == [e["train_loss"] for e in b["history"]]
    assert [e["epoch"] for e in read_jsonl(out / "log.jsonl")] == [1, 2, 3, 4]
