"""The executor: a failing run is that run's error (any exception, a worker that dies), the others go on."""
import os

import pytest

import hafvt.train as train_mod
from hafvt.executor import Job, _train, execute
from hafvt.config import load_config
from hafvt.reproduce import reproduce_table
from helpers import REPO, tiny_demo


def _jobs(tmp_path, names=("popularity", "transitions")):
    return [Job(f"{n} seed 0", load_config(REPO / "configs" / f"{n}.yaml", ["n_neg=19"]).to_dict(), tmp_path / n, 0)
            for n in names]


def dies_for_popularity(scenario_dir, cfg, out, device, seed, invocation, threads, scenario=None):
    """A worker's target that kills its own process for one job (as the kernel's OOM killer would)."""
    if cfg["model"] == "popularity":
        os._exit(9)
    return _train(scenario_dir, cfg, out, device, seed, invocation, threads, scenario)


def test_an_unexpected_exception_is_one_runs_error(tmp_path, monkeypatch):
    d = tiny_demo(tmp_path)
    real = train_mod.run

    def run(scenario_dir, cfg, *a, **k):
        if cfg.model == "popularity":
            raise TypeError("a bug in one run")
        return real(scenario_dir, cfg, *a, **k)

    monkeypatch.setattr(train_mod, "run", run)
    errors = execute(d, _jobs(tmp_path), progress=False)
    assert [e["label"] for e in errors] == ["popularity seed 0"]
    assert errors[0]["error"] == "TypeError: a bug in one run"
    assert (tmp_path / "transitions" / "results.json").is_file()  # the other run went on


def test_a_table_with_a_failing_row_is_written_with_the_failure(tmp_path, monkeypatch):
    d = tiny_demo(tmp_path)
    real = train_mod.run
    monkeypatch.setattr(train_mod, "run", lambda s, cfg, *a, **k: (_ for _ in ()).throw(KeyError("boom"))
                        if cfg.model == "transitions" else real(s, cfg, *a, **k))
    t = reproduce_table(d, 2, 1, tmp_path / "t", epochs=1, overrides=["n_neg=19"], rows=["popularity", "transitions"],
                        progress=False)
    rows = {r["row"]: r for r in t["rows"]}
    assert rows["popularity"]["seeds_done"] == 1 and rows["transitions"]["seeds_done"] == 0
    assert rows["transitions"]["errors"] == ["KeyError: 'boom'"]
    assert "| transitions | baseline | 0 | failed |" in (tmp_path / "t" / "table2.md").read_text()


@pytest.mark.slow
def test_a_worker_that_dies_fails_its_run_and_the_rest_go_on(tmp_path):
    d = tiny_demo(tmp_path)
    jobs = _jobs(tmp_path, ("popularity", "transitions", "transitions"))
    jobs[2] = Job("transitions seed 1", jobs[2].cfg, tmp_path / "transitions1", 1)
    errors = execute(d, jobs, workers=2, progress=False, target=dies_for_popularity)
    died = [e for e in errors if e["error"].startswith("BrokenProcessPool: A process in the process pool was terminated")]
    assert "popularity seed 0" in [e["label"] for e in died] and len(errors) == len(died)
    # a fresh pool ran what was not in the broken one (each other run finished or is named); the next call resumes
    finished = {j.label for j in jobs if (j.out / "results.json").is_file()}
    assert finished | {e["label"] for e in died} == {j.label for j in jobs} and "transitions seed 1" in finished
    assert execute(d, jobs[1:], workers=2, progress=False) == []
