"""The speed paths compute what the plain paths compute: the chunked loss, the padded last batch,
the one-pass full ranking."""
import numpy as np
import pytest
import torch

from hafvt.models import fused_ce
from hafvt.models.hafvt import softmax_nll


def _inputs(n=37, d=8, items=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d, generator=g, requires_grad=True)
    W = torch.randn(items, d, generator=g, requires_grad=True)  # learnable like E_id
    target = torch.randint(0, 30, (n,), generator=g)  # in the unmasked columns below
    mask = torch.zeros(items, dtype=torch.bool)
    mask[30:] = True
    return q, W, target, mask


def _loss_and_grads(fn, q, W, target, mask, **kw):
    q.grad = W.grad = None
    # E normalised from a parameter (as item_rows does for id) and a non-uniform upstream gradient
    E = torch.nn.functional.normalize(W, dim=-1) * 3
    nll = fn(q * 2, E, target, mask, **kw)
    (nll * torch.linspace(0.5, 1.5, len(nll))).sum().backward()
    return nll.detach(), q.grad.clone(), W.grad.clone()


@pytest.mark.parametrize("use_mask", [False, True])
def test_chunked_loss_and_gradients_match_the_reference_fp32(use_mask):
    q, W, target, mask = _inputs()
    mask = mask if use_mask else None
    ref = _loss_and_grads(softmax_nll, q, W, target, mask)
    for chunk in (53, 53 * 5, 1 << 20):  # one row per chunk, uneven chunks, one chunk
        got = _loss_and_grads(fused_ce.fused_softmax_nll, q, W, target, mask, chunk_elems=chunk)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    if use_mask:  # the excluded items get no gradient from the log-sum-exp
        E2 = torch.nn.functional.normalize(W, dim=-1).detach().requires_grad_()
        fused_ce.chunked_logsumexp(q.detach(), E2, mask, 53 * 5).sum().backward()
        assert E2.grad[30:].abs().max() == 0 and E2.grad[:30].abs().max() > 0


def test_chunked_loss_matches_the_reference_under_bf16_autocast():
    q, W, target, mask = _inputs(n=64, d=16, items=301)
    for m in (None, mask):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = _loss_and_grads(softmax_nll, q, W, target, m)
            got = _loss_and_grads(fused_ce.fused_softmax_nll, q, W, target, m, chunk_elems=301 * 7)
        assert got[0].dtype == torch.float32 and got[1].dtype == q.dtype and got[2].dtype == W.dtype
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item())


def test_model_loss_uses_the_fused_form_and_matches_the_reference(monkeypatch):
    import hafvt.models.hafvt as hm
    from test_model import batch, make_model

    out = {}
    for fused in (True, False):
        monkeypatch.setattr(hm, "FUSED_CE", fused)
        for vs in ("all", "domain"):
            model, b = make_model(view_softmax=vs), batch()
            model.train()
            assert (model.softmax_nll is fused_ce.fused_softmax_nll) == fused
            loss = model.loss(b)
            loss.backward()
            out[fused, vs] = (loss.detach(), model.E_id.weight.grad.clone(), model.enc["x_img"].ln.weight.grad.clone())
    for vs in ("all", "domain"):
        for a, b in zip(out[True, vs], out[False, vs]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_padded_last_batch_gives_the_same_epoch(tmp_path):
    """Padding the short last batch (no recompilation when compiled) changes neither loss nor update."""
    from hafvt.config import load_config
    from hafvt.data.batches import scenario_views
    from hafvt.data.c2dsr import read_scenario
    from hafvt.models import build_model
    from hafvt.train import load_tables, make_optimizer, pad_batch, train_epoch
    from helpers import tiny_demo

    d = tiny_demo(tmp_path)
    scn = read_scenario(d)
    cfg = load_config(overrides={"q": 16, "batch_size": 48, "dropout": 0.0})
    train = scenario_views(scn, cfg.maxlen)["train"]
    assert len(train) % cfg.batch_size, "the last batch must be short for this test"
    tables = load_tables(d, cfg)[0]
    runs = {}
    for pad in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, scn, tables)
        opt = make_optimizer(model, cfg, torch.device("cpu"))
        loss = train_epoch(model, opt, train, cfg, 0, 1, torch.device("cpu"), False, pad_last=pad)
        runs[pad] = loss, [p.detach().clone() for p in model.parameters()]
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-6)
    for a, b in zip(runs[True][1], runs[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    b = pad_batch(train.index(torch.arange(5)), 8)
    assert len(b["seq"]) == 8 and (b["tgt"][5:] == -1).all() and torch.equal(b["tgt"][:5], train.tgt[:5])
