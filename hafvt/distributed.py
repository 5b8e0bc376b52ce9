"""One run over several processes (``torchrun``): process group, each rank's share of a batch, loss scaling.

``torchrun --nproc-per-node N -m hafvt train ...`` starts N copies of the trainer with WORLD_SIZE,
RANK and LOCAL_RANK set. Every rank draws the same epoch permutation and takes its contiguous slice
of each global batch of ``cfg.batch_size`` lines. A view's loss is a mean over the global batch's
targets, so each rank sums its local terms times ``world_size / global targets``: DDP's mean of the
ranks' gradients is then the one-process gradient. Rank 0 evaluates and writes the result files.
"""
from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

# Rank 0 evaluates while the others wait at a collective; full-ranking a large split may take a while.
WAIT_FOR_RANK0 = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def spread(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int:
    """WORLD_SIZE as set by torchrun (1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init(device: str) -> tuple[Ranks, torch.device]:
    """Join torchrun's process group (gloo on CPU, nccl on CUDA, device cuda:LOCAL_RANK); one process: no-op."""
    if launched_world_size() <= 1:
        return Ranks(), torch.device(device)
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=WAIT_FOR_RANK0)
    return Ranks(dist.get_rank(), dist.get_world_size()), dev


def finish(ranks: Ranks) -> None:
    if ranks.spread and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def local_slice(n: int, ranks: Ranks) -> slice:
    """This rank's contiguous share of a global batch of n lines (shares differ by at most one line)."""
    bounds = np.linspace(0, n, ranks.world_size + 1).round().astype(int)
    return slice(bounds[ranks.rank], bounds[ranks.rank + 1])


def sum_scales(global_counts: dict[str, int], world_size: int) -> dict[str, float]:
    """Per view, what a rank multiplies the sum of its local loss terms by: world_size / global targets."""
    return {v: world_size / n if n else 0.0 for v, n in global_counts.items()}


def check_supported(model: nn.Module, name: str) -> None:
    """A model trains over several processes when its ``loss`` takes ``sum_scale``."""
    if "sum_scale" not in inspect.signature(model.loss).parameters:
        raise ValueError(f"model {name!r} ({type(model).__name__}) does not support training over several "
                         f"processes (its loss takes no sum_scale); run it in one process, without torchrun")


class LossOf(nn.Module):
    """``forward`` = the model's loss, so DDP (which hooks ``forward``) can wrap training."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, counts: dict, sum_scale: dict) -> torch.Tensor:
        return self.model.loss(batch, counts, sum_scale=sum_scale)


def wrap(model: nn.Module, dev: torch.device) -> nn.Module:
    ids = [dev.index] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(LossOf(model), device_ids=ids)


def mean_over_ranks(x: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if ranks.spread:
        dist.all_reduce(x)
        x = x / ranks.world_size
    return x


def from_rank0(obj, ranks: Ranks):
    """Rank 0's ``obj`` on every rank (the others wait here while rank 0 evaluates and writes)."""
    if not ranks.spread:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
