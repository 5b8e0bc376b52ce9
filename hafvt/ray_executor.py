"""Run many training runs as Ray tasks: over the GPUs of one node, or a Ray cluster.

``execute(..., address=None, gpus_per_run=1.0)`` takes the same jobs as ``hafvt.executor.execute`` and
returns its errors in the same form. Each unfinished job is one Ray task asking for ``gpus_per_run``
GPUs on cuda (0.25 packs four runs on a GPU) or one CPU on cpu. A task whose worker dies is retried
(``MAX_RETRIES``) and ``hafvt.train.run`` resumes from the run's checkpoint; ``results.json`` is
written atomically, so a killed run leaves none. On a cluster every node reads the scenario and
writes OUT on a shared file system, with the same hafvt installed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from hafvt.executor import Job, _train, pending

MAX_RETRIES = 3  # worker deaths (killed, out of memory, node lost) before a run counts as failed
NOT_RUN = "not run: time budget (--max-minutes) spent; run the command again to resume"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    return ray


def _run_before(wall_deadline: float | None, *args) -> str | None:
    """One run, unless the task starts after the deadline (the queue may hold it past the budget)."""
    if wall_deadline is not None and time.time() > wall_deadline:
        return NOT_RUN
    return _train(*args)


def execute(scenario_dir, jobs: list[Job], device: str = "cpu", workers: int = 1, progress: bool = True,
            desc: str = "runs", scenario=None, deadline: float | None = None, address: str | None = None,
            gpus_per_run: float = 1.0) -> list[dict]:
    """Run every unfinished job as a Ray task; returns ``[{"label", "error"}]`` for the runs that failed.

    Called like ``hafvt.executor.execute``; ``workers`` and ``scenario`` are unused (Ray packs the runs
    by their resources; each task reads the scenario). ``address``: an existing cluster (``"auto"``,
    ``"HOST:6379"``); none starts a local instance. Paths are sent absolute: a worker's folder is not
    this one, and a shared file system must be mounted at the same path on every node.
    ``deadline`` (a ``time.monotonic()`` value): no run starts after it, as in ``hafvt.executor``.
    """
    from tqdm.auto import tqdm

    from hafvt.provenance import invocation

    ray = _import_ray()
    todo = pending(scenario_dir, jobs)
    errors = []
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="run", disable=not progress)
    if not todo:
        bar.close()
        return errors
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    gpu = device.startswith("cuda")
    # a task sees only its own GPU (CUDA_VISIBLE_DEVICES), so "cuda:1" becomes that task's "cuda"
    task = ray.remote(_run_before).options(num_gpus=gpus_per_run if gpu else 0, num_cpus=1, max_retries=MAX_RETRIES,
                                          retry_exceptions=False)
    wall_deadline = None if deadline is None else time.time() + (deadline - time.monotonic())
    inv = invocation()
    scenario_dir = str(Path(scenario_dir).resolve())
    running = {task.remote(wall_deadline, scenario_dir, j.cfg, str(Path(j.out).resolve()), "cuda" if gpu else device, j.seed,
                           inv, 1): j for j in todo}
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        job = running.pop(ready[0])
        try:
            err = ray.get(ready[0])
        except Exception as e:  # a worker that died MAX_RETRIES + 1 times, or an unexpected error in the run
            err = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        bar.update(1)
        if err:
            errors.append({"label": job.label, "error": err})
            if err != NOT_RUN:
                tqdm.write(f"{desc}: {job.label} failed: {err}", file=sys.stderr)
    bar.close()
    return errors
