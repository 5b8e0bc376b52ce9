"""Run many training runs: in this process, or as several worker processes at once.

Small runs (the FK-mini tables, the demo) leave a GPU mostly idle; ``workers > 1`` trains that
many runs at the same time on the same device, each in its own process (``spawn``: no CUDA state
is shared). A run whose directory is complete is never redone, so an interrupted batch of runs
resumes; a finished run is reused only when it was made for the job asked for (``check_reusable``). Every run
writes its own ``results.json`` atomically (``hafvt.train.run``). A run that fails, with any exception or
a worker process that dies, is reported as that run's error and the others go on.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path


@dataclass(frozen=True)
class Job:
    label: str  # e.g. "sasrec seed 2"
    cfg: dict  # a resolved Config as a dict
    out: Path  # the run directory
    seed: int


def finished(rd: Path) -> bool:
    """A run is done when it has its results and its per-line test ranks (a committed table keeps only
    the results.json of its runs; the ranks, needed for the paired test, are regenerated)."""
    return (Path(rd) / "results.json").is_file() and (Path(rd) / "test_ranks.npz").is_file()


REUSE = "use another --out, or delete the run to train it again"


def check_reusable(job: Job, scenario_dir, data_hashes: dict, current, certs=None) -> None:
    """A ValueError unless the finished run in ``job.out`` was made for ``job``: the same config hash, seed
    and data hash, and sources that did not change since in files that count for it (or a certificate)."""
    from hafvt import provenance
    from hafvt.candidates import candidates_path
    from hafvt.config import Config
    from hafvt.data.c2dsr import data_hash

    f = Path(job.out) / "results.json"
    try:
        res = json.loads(f.read_text())
        prov = res["provenance"]
        config_hash, seed, made_from = prov["config_hash"], prov["seed"], prov["data_hash"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{f}: unreadable ({type(e).__name__}: {e}); {REUSE}") from None
    cfg = Config(**job.cfg)
    if config_hash != cfg.hash():
        old = res.get("config", {})
        diff = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in sorted(job.cfg.items()) if k not in old or old[k] != v]
        raise ValueError(f"{job.out}: a finished run made with another config "
                         f"({', '.join(diff[:4]) or 'config hash ' + config_hash}); {REUSE}")
    if seed != job.seed:
        raise ValueError(f"{job.out}: a finished run made with seed {seed}, not {job.seed}; {REUSE}")
    key = (cfg.n_neg, cfg.candidate_seed)
    if key not in data_hashes:
        files = [candidates_path(scenario_dir, s, cfg.candidate_seed, cfg.n_neg) for s in ("valid", "test")]
        data_hashes[key] = data_hash(scenario_dir, [c for c in files if c.is_file()])
    if made_from != data_hashes[key]:
        raise ValueError(f"{job.out}: a finished run made from other data (data hash {made_from[:12]}, this scenario's is "
                         f"{data_hashes[key][:12]}); {REUSE}")
    changed, _ = provenance.stale_sources(prov, provenance.portable(f), prov.get("embeddings") is not None, current, certs)
    if changed:
        raise ValueError(f"{job.out}: a finished run made by sources that changed since ({', '.join(changed[:3])}"
                         f"{' ...' if len(changed) > 3 else ''}); {REUSE}")


def pending(scenario_dir, jobs: list[Job]) -> list[Job]:
    """The jobs whose run is not finished; each finished one must have been made for its job
    (``check_reusable``: a run is never overwritten, nothing runs while one is in the way)."""
    from hafvt import provenance
    from hafvt.certify import load_certificates

    current, certs, hashes = provenance._Current(provenance.REPO), load_certificates(), {}
    for j in jobs:
        if finished(j.out):
            check_reusable(j, scenario_dir, hashes, current, certs)
    return [j for j in jobs if not finished(j.out)]


def _train(scenario_dir: str, cfg: dict, out: str, device: str, seed: int, invocation: dict | None, threads: int,
           scenario=None) -> str | None:
    """One run; returns an error message for the expected failures (e.g. a missing embedding cache)."""
    import torch

    from hafvt import provenance
    from hafvt.config import Config
    from hafvt.train import run

    if invocation is not None:  # a worker process records what its parent was asked to do
        provenance.set_invocation(invocation)
    if threads:
        torch.set_num_threads(threads)
    try:
        run(scenario_dir, Config(**cfg).validate(), out, device=device, seed=seed, progress=False, scenario=scenario)
    except Exception as e:  # noqa: BLE001 - any failure is this run's, reported with the table (not its end)
        return _error(e)
    return None


def _error(e: BaseException) -> str:
    """One run's failure as its table shows it."""
    return f"{type(e).__name__}: {e}"


def execute(scenario_dir, jobs: list[Job], device: str = "cpu", workers: int = 1, progress: bool = True,
            desc: str = "runs", scenario=None, deadline: float | None = None, target=None) -> list[dict]:
    """Run every unfinished job, in order; returns ``[{"label", "error"}]`` for the runs that failed.

    ``deadline`` (a ``time.monotonic()`` value): no run starts after it; the runs not started are
    reported as errors ("time budget"), and a later call with the same jobs resumes them. ``target``:
    what a worker process runs for a job (default ``_train``; same arguments and return).
    """
    from tqdm.auto import tqdm

    from hafvt.provenance import invocation

    todo = pending(scenario_dir, jobs)
    errors = []
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="run", disable=not progress)

    def done(job: Job, err: str | None):
        bar.update(1)
        if err:
            errors.append({"label": job.label, "error": err})
            tqdm.write(f"{desc}: {job.label} failed: {err}", file=sys.stderr)

    def late() -> bool:
        return deadline is not None and time.monotonic() > deadline

    inv = invocation()
    queue = list(todo)
    target = _train if target is None else target
    if workers <= 1 or len(todo) <= 1:
        while queue and not late():
            job = queue.pop(0)
            bar.set_postfix_str(job.label)
            done(job, target(str(scenario_dir), job.cfg, str(job.out), device, job.seed, None, 0, scenario))
    else:
        # CPU threads per worker: the cores shared out (on a GPU too: 14 workers of 16 threads each on 16
        # cores left their host-side work contending; the GPU kernels do not need the threads)
        threads = max(1, (os.cpu_count() or 1) // workers)
        while queue and not late():  # a new pool after a worker died (BrokenProcessPool)
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                running, broken = {}, False  # broken: a worker died (killed, e.g. for memory), failing every run in the pool
                while (queue and not broken and not late()) or running:
                    while queue and not broken and len(running) < workers and not late():
                        j = queue.pop(0)
                        running[pool.submit(target, str(scenario_dir), j.cfg, str(j.out), device, j.seed, inv, threads)] = j
                    finished_now, _ = wait(running, return_when=FIRST_COMPLETED)  # none running: returns at once
                    for f in finished_now:
                        done(running.pop(f), f.result() if f.exception() is None else _error(f.exception()))
                    broken = broken or any(isinstance(f.exception(), BrokenProcessPool) for f in finished_now)
    for job in queue:  # not started: past the deadline
        errors.append({"label": job.label, "error": "not run: time budget (--max-minutes) spent; run the command again to resume"})
    bar.close()
    return errors
