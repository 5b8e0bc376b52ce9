"""Linear + log-sum-exp over all items without holding the (rows x items) scores.

``chunked_logsumexp(q, E, mask)`` = ``logsumexp(q @ E^T masked, -1)`` in float32. The forward pass
walks row chunks of q and keeps only the (rows,) result; the backward pass recomputes each
chunk's scores and turns them into ``softmax * grad`` on the fly, so peak memory is one chunk
of scores instead of the whole matrix (kept twice by autograd: bf16 and float32). The matmuls
run in the autocast dtype when autocast is on (bf16 on CUDA), as the plain form does;
gradients for q and E accumulate in float32 across chunks.
"""
from __future__ import annotations

import torch

from hafvt.models.lookup import rows

# Elements of one chunk of scores (rows x items): 2^27 float32 = 512 MiB.
CHUNK_ELEMS = 1 << 27


def _chunk_lse(q: torch.Tensor, E: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    s = q @ E.T
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    return torch.logsumexp(s.float(), dim=-1)


def _chunk_dscores(q: torch.Tensor, E: torch.Tensor, mask: torch.Tensor | None, lse: torch.Tensor,
                   g: torch.Tensor) -> torch.Tensor:
    """d loss / d scores = softmax(scores) * g, in the matmul dtype; masked columns get exactly 0."""
    s = q @ E.T
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    return (torch.exp(s.float() - lse[:, None]) * g[:, None]).to(q.dtype)


_kernels = {"lse": _chunk_lse, "dscores": _chunk_dscores}


def compile_kernels() -> None:
    """torch.compile the per-chunk kernels (CUDA): the exp/log-sum-exp passes fuse with the casts."""
    _kernels["lse"] = torch.compile(_chunk_lse, dynamic=True)
    _kernels["dscores"] = torch.compile(_chunk_dscores, dynamic=True)


def _rows_per_chunk(n_items: int, chunk_elems: int) -> int:
    return max(1, chunk_elems // max(1, n_items))


class _ChunkedLSE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, E, mask, chunk_elems):
        step = _rows_per_chunk(E.shape[0], chunk_elems)
        lse = torch.cat([_kernels["lse"](q[i : i + step], E, mask) for i in range(0, len(q), step)]) if len(q) \
            else q.new_zeros(0, dtype=torch.float32)
        ctx.save_for_backward(q, E, mask, lse)
        ctx.step = step
        return lse

    @staticmethod
    def backward(ctx, g):
        q, E, mask, lse = ctx.saved_tensors
        step = ctx.step
        need_q, need_E = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dq = torch.empty(q.shape, dtype=torch.float32, device=q.device) if need_q else None
        dE = torch.zeros(E.shape, dtype=torch.float32, device=E.device) if need_E else None
        g = g.float()
        for i in range(0, len(q), step):
            qc = q[i : i + step]
            ds = _kernels["dscores"](qc, E, mask, lse[i : i + step], g[i : i + step])
            if need_q:
                dq[i : i + step] = ds @ E
            if need_E:
                dE.add_(ds.T @ qc)
        return (None if dq is None else dq.to(q.dtype)), (None if dE is None else dE.to(E.dtype)), None, None


def chunked_logsumexp(q: torch.Tensor, E: torch.Tensor, mask: torch.Tensor | None = None,
                      chunk_elems: int = CHUNK_ELEMS) -> torch.Tensor:
    """``logsumexp(q @ E^T, -1)`` (float32), ``mask`` (items,) True = column excluded; autocast-aware."""
    dtype = torch.promote_types(q.dtype, E.dtype)
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
    with torch.autocast(q.device.type, enabled=False):
        return _ChunkedLSE.apply(q.to(dtype), E.to(dtype), mask, chunk_elems)


def fused_softmax_nll(q: torch.Tensor, E: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                      chunk_elems: int = CHUNK_ELEMS) -> torch.Tensor:
    """-log softmax(q E^T)[target] per row, as ``hafvt.models.hafvt.softmax_nll``, in row chunks."""
    return chunked_logsumexp(q, E, mask, chunk_elems) - (q.float() * rows(E, target).float()).sum(-1)
