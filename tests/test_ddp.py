"""One run over several processes (torchrun + DDP) trains as one process does with the same global batch."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import hafvt.train as train_mod
from hafvt import distributed
from hafvt.config import load_config
from hafvt.data.batches import VIEW_INDEX, scenario_views
from hafvt.data.c2dsr import read_scenario
from hafvt.models import build_model

from helpers import REPO, interrupt_at, tiny_demo

# dropout 0: ranks draw other dropout masks than one process does
TINY = {"batch_size": 128, "hidden": 16, "q": 16, "n_neg": 19, "dropout": 0.0, "eval_every": 1}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return tiny_demo(tmp_path_factory.mktemp("demo"))


def split_gradient(model, views, lines: np.ndarray, world_size: int):
    """What DDP computes: the mean over ranks of each rank's scaled loss and gradient on its slice of ``lines``."""
    global_counts = {v: int(views.n_targets[lines, VIEW_INDEX[v]].sum()) for v in model.views}
    scale = distributed.sum_scales(global_counts, world_size)
    model.zero_grad()
    total = 0.0
    for rank in range(world_size):
        mine = lines[distributed.local_slice(len(lines), distributed.Ranks(rank, world_size))]
        counts = {v: int(views.n_targets[mine, VIEW_INDEX[v]].sum()) for v in model.views}
        loss = model.loss(views.index(torch.from_numpy(mine)), counts, sum_scale=scale)
        loss.backward()
        total += float(loss.detach())
    return total / world_size, {n: p.grad / world_size for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name, over", [
    ("hafvt", {}), ("ifcdsr", {}), ("id-merged", {}), ("id-hier-symmetric", {}), ("hafvt", {"view_softmax": "domain"}),
    ("hafvt", {"batched_encoders": True}),
    ("gru4rec", {}), ("sasrec", {}), ("srgnn", {}),
])
def test_ranks_scaled_losses_average_to_the_one_process_loss_and_gradient(demo, name, over):
    cfg = load_config(REPO / "configs" / f"{name}.yaml", {**TINY, **over})
    scn = read_scenario(demo)
    views = scenario_views(scn, cfg.maxlen, cfg.train_targets == "last")["train"]
    torch.manual_seed(0)
    model = build_model(cfg, scn, train_mod.load_tables(demo, cfg)[0]).train()
    lines = np.random.default_rng(0).permutation(len(views))[:37]  # 3 ranks: slices of 12, 13 and 12 lines
    counts = {v: int(views.n_targets[lines, VIEW_INDEX[v]].sum()) for v in model.views}
    model.zero_grad()
    one = model.loss(views.index(torch.from_numpy(lines)), counts)
    one.backward()
    one_grad = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    loss, grad = split_gradient(model, views, lines, 3)
    assert loss == pytest.approx(float(one.detach()), rel=1e-5)
    assert grad.keys() == one_grad.keys()
    for n in grad:
        tol = 1e-5 * float(one_grad[n].abs().max())  # float32 sums in another order; entries near 0 cancel
        torch.testing.assert_close(grad[n], one_grad[n], rtol=1e-4, atol=tol, msg=lambda m: f"{n}: {m}")


def test_a_model_without_scaled_loss_is_refused_by_name(demo):
    cfg = load_config(REPO / "configs" / "c2dsr.yaml", TINY)
    model = build_model(cfg, read_scenario(demo))
    with pytest.raises(ValueError, match="'c2dsr'.*does not support training over several processes"):
        distributed.check_supported(model, cfg.model)


@pytest.mark.parametrize("batched", [False, True])
def test_a_rank_left_without_lines_still_backpropagates_a_zero_loss_through_every_parameter(demo, batched):
    """A short last batch of 1 line over 2 ranks: rank 1 must still join DDP's gradient reduction."""
    cfg = load_config(REPO / "configs" / "hafvt.yaml", {**TINY, "batched_encoders": batched})
    scn = read_scenario(demo)
    views = scenario_views(scn, cfg.maxlen, cfg.train_targets == "last")["train"]
    model = build_model(cfg, scn, train_mod.load_tables(demo, cfg)[0]).train()
    as_ddp = lambda batch, counts, scale: model.loss(batch, counts, sum_scale=scale)  # noqa: E731
    host = np.array([5])
    idle = next(r for r in (distributed.Ranks(0, 2), distributed.Ranks(1, 2)) if not len(host[distributed.local_slice(1, r)]))
    loss = train_mod._rank_step(model, as_ddp, views, host, torch.from_numpy(host), cfg, torch.device("cpu"), False, idle)
    loss.backward()
    assert float(loss.detach()) == 0.0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and not g.any() for g in grads)


def test_global_batch_slices_cover_it_once_in_order():
    for n, world in ((128, 2), (37, 3), (1, 2)):
        parts = [np.arange(n)[distributed.local_slice(n, distributed.Ranks(r, world))] for r in range(world)]
        assert np.array_equal(np.concatenate(parts), np.arange(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def torchrun(demo, out, epochs: int):
    """`torchrun --nproc-per-node 2 -m hafvt train` on CPU (gloo); its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "hafvt",
           "train", str(demo), "--config", str(REPO / "configs" / "hafvt.yaml"), "--out", str(out),
           "--epochs", str(epochs), "--quiet", *sets]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def losses(res: dict) -> list:
    return [e["train_loss"] for e in res["history"]]


def leaves(d: dict) -> list:
    return [x for k in sorted(d) for x in (leaves(d[k]) if isinstance(d[k], dict) else [d[k]])]


@pytest.fixture(scope="module")
def straight(demo, tmp_path_factory):
    """One process, 3 epochs: the reference trajectory."""
    cfg = load_config(REPO / "configs" / "hafvt.yaml", {**TINY, "epochs": 3})
    out = tmp_path_factory.mktemp("straight")
    return train_mod.run(demo, cfg, out, progress=False), out


@pytest.mark.slow
def test_two_processes_train_as_one_and_write_the_results_once(demo, straight, tmp_path):
    one, one_dir = straight
    stdout = torchrun(demo, tmp_path / "two", epochs=3)
    assert len(stdout.strip().splitlines()) == 1  # rank 0 reports
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert len(losses(one)) == 3 and np.allclose(losses(two), losses(one), rtol=1e-5, atol=0)
    assert two["provenance"]["world_size"] == 2 and two["config"] == one["config"]
    assert np.allclose(leaves(two["metrics"]), leaves(one["metrics"]), rtol=1e-4)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "log.jsonl", "results.json", "test_ranks.npz"]
    log = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3] and all("valid" in e for e in log)
    assert set(np.load(tmp_path / "two" / "test_ranks.npz").files) == set(np.load(one_dir / "test_ranks.npz").files)


@pytest.mark.slow
def test_two_processes_resume_a_checkpoint_to_the_one_process_trajectory(demo, straight, tmp_path, monkeypatch):
    cfg = load_config(REPO / "configs" / "hafvt.yaml", {**TINY, "epochs": 3})
    interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_mod.run(demo, cfg, tmp_path / "resumed", progress=False)
    torchrun(demo, tmp_path / "resumed", epochs=3)
    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert [e["epoch"] for e in resumed["history"]] == [1, 2, 3]
    assert np.allclose(losses(resumed), losses(straight[0]), rtol=1e-5, atol=0)
