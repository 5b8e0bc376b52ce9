"""Rows of an item table by index, with a gradient that is the same on every run.

``table[index]`` (advanced indexing) sums the gradient of repeated indices with ``index_put_``
(accumulate), which on CPU adds them with atomics across threads once the gradient has more than
32,768 elements: the order of the additions, and so the float32 rounding of E_id's gradient,
changed from run to run with 2 threads (measured: the loss differed from epoch 2 on). ``F.embedding``
sums them in a fixed order, on CPU and CUDA; with one thread it equals ``table[index]`` bit for bit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 2-D table and an integer index of any shape: (*index.shape, d)."""
    return F.embedding(index, table)
