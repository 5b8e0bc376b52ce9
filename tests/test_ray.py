"""``hafvt reproduce --executor ray``: runs at once on a local Ray, the in-process numbers, a killed worker retried."""
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from hafvt.cli import main as cli
from hafvt.reproduce import load_table, run_dir
from helpers import REPO, tiny_demo

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' to run the Ray executor's tests")

# 20 epochs validated every epoch: a checkpoint early, then ~2 s of training in which to kill the worker
ARGS = ["--table", "2", "--seeds", "2", "--epochs", "20", "--rows", "sasrec", "--set", "hidden=16", "--set", "n_neg=99",
        "--set", "eval_every=1", "--set", "patience=0", "--quiet"]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module; its workers import this checkout's hafvt."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([before] if before else []))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The same table with the default executor: the numbers the Ray runs must give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task does
    d = tiny_demo(tmp_path_factory.mktemp("demo"))
    out = tmp_path_factory.mktemp("local") / "t2"
    assert cli(["reproduce", str(d), *ARGS, "--out", str(out)]) == 0
    torch.set_num_threads(before)
    return d, out


def per_seed(out: Path) -> list:
    return [json.loads((run_dir(out, "sasrec", s) / "results.json").read_text())["metrics"] for s in (0, 1)]


def interval(out: Path, seed: int) -> tuple[float, float]:
    """When a run trained: results.json's write time, less the run's recorded seconds."""
    f = run_dir(out, "sasrec", seed) / "results.json"
    end = f.stat().st_mtime
    return end - json.loads(f.read_text())["seconds"], end


def test_ray_runs_two_at_once_with_the_in_process_numbers(local_ray, in_process, tmp_path):
    d, local = in_process
    out = tmp_path / "t2"
    assert cli(["reproduce", str(d), *ARGS, "--executor", "ray", "--out", str(out)]) == 0
    assert per_seed(out) == per_seed(local)
    assert [r["metrics"] for r in load_table(out, 2)["rows"]] == [r["metrics"] for r in load_table(local, 2)["rows"]]
    (a0, a1), (b0, b1) = interval(out, 0), interval(out, 1)
    assert a0 < b1 and b0 < a1, "the two runs did not train at the same time"


def _training_workers() -> list[int]:
    """PIDs of the Ray workers running a training task now (Ray titles them after the task's function)."""
    pids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "cmdline").read_bytes().startswith(b"ray::_run_before"):
                pids.append(int(p.name))
        except OSError:
            pass
    return pids


def test_a_killed_worker_is_retried_and_the_table_completes(local_ray, in_process, tmp_path):
    d, local = in_process
    out = tmp_path / "t2"
    rc = []
    t = threading.Thread(target=lambda: rc.append(cli(["reproduce", str(d), *ARGS, "--executor", "ray", "--out", str(out)])))
    t.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline:
        in_progress = [s for s in (0, 1) if (run_dir(out, "sasrec", s) / "checkpoint.pt").is_file()
                       and not (run_dir(out, "sasrec", s) / "results.json").exists()]
        workers = _training_workers()
        if in_progress and workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    t.join(timeout=600)  # generous: a loaded 2-core machine took over 120 s to retry and finish
    assert killed is not None, "no run in progress was seen to kill"
    assert rc == [0]
    assert per_seed(out) == per_seed(local)
    for s in (0, 1):
        rd = run_dir(out, "sasrec", s)
        assert [e["epoch"] for e in json.loads((rd / "results.json").read_text())["history"]] == list(range(1, 21))
        assert not [f.name for f in rd.iterdir() if f.name.endswith(".tmp")]  # no partial file left behind


def test_missing_ray_names_the_extra(monkeypatch):
    import builtins

    from hafvt import ray_executor

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "ray" else real(name, *a, **k))
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[ray\]'"):
        ray_executor._import_ray()
