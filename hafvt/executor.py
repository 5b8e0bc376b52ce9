"""Run many training runs: in this process, or as several worker processes at once.

Small runs (the FK-mini tables, the demo) leave a GPU mostly idle; ``workers > 1`` trains that
many runs at the same time on the same device, each in its own process (``spawn``: no CUDA state
is shared). A run whose directory is complete is never redone, so an interrupted batch of runs
resumes. Every run writes its own ``results.json`` atomically (``hafvt.train.run``).
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def execute(scenario_dir, jobs: list[Job], device: str = "cpu", workers: int = 1, progress: bool = True,
            desc: str = "runs", scenario=None, deadline: float | None = None) -> list[dict]:
    """Run every unfinished job, in order; returns ``[{"label", "error"}]`` for the runs that failed.

    ``deadline`` (a ``time.monotonic()`` value): no run starts after it; the runs not started are
    reported as errors ("time budget"), and a later call with the same jobs resumes them.
    """
    from tqdm.auto import tqdm

    from hafvt.provenance import invocation

    todo = [j for j in jobs if not finished(j.out)]
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
    pending = list(todo)
    if workers <= 1 or len(todo) <= 1:
        while pending and not late():
            job = pending.pop(0)
            bar.set_postfix_str(job.label)
            done(job, _train(str(scenario_dir), job.cfg, str(job.out), device, job.seed, None, 0, scenario))
    else:
        # CPU threads per worker: the cores shared out (on a GPU too: 14 workers of 16 threads each on 16
        # cores left their host-side work contending; the GPU kernels do not need the threads)
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            running = {}
            while pending or running:
                while pending and len(running) < workers and not late():
                    j = pending.pop(0)
                    running[pool.submit(_train, str(scenario_dir), j.cfg, str(j.out), device, j.seed, inv, threads)] = j
                if not running:
                    break
                finished_now, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in finished_now:
                    done(running.pop(f), f.result())
    for job in pending:  # not started: past the deadline
        errors.append({"label": job.label, "error": "not run: time budget (--max-minutes) spent; run the command again to resume"})
    bar.close()
    return errors
