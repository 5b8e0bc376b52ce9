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


def _rank_split_reference(model, views, candidates, n_x, batch_size=256):
    """rank_split as it was: per-domain column slices, metrics.full_ranks and sampled_ranks per tie policy."""
    from hafvt.metrics import full_ranks, sampled_ranks
    from hafvt.train import REPORTED_TIES

    model.eval()
    out = {(kind, tie): [] for kind in ("sampled", "full") for tie in REPORTED_TIES}
    for start in range(0, len(views), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(views)))
        batch = views.index(rows)
        P = model.scores(batch)
        target, dom = batch["target"], batch["domain"]
        for tie in REPORTED_TIES:
            full = torch.empty(len(rows), dtype=torch.float64)
            for d, cols in ((0, slice(0, n_x)), (1, slice(n_x, None))):
                sel = dom == d
                full[sel] = full_ranks(P[sel][:, cols], target[sel] - (n_x if d else 0), tie=tie)
            out[("sampled", tie)].append(sampled_ranks(P.gather(1, candidates[rows]), tie=tie))
            out[("full", tie)].append(full)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


class _TiedScores:
    """Scores with many exact ties (and zeros) across both domains."""

    def __init__(self, n_items):
        self.n_items = n_items

    def eval(self):
        return self

    def scores(self, batch):
        g = torch.Generator().manual_seed(int(batch["target"].sum()))
        return torch.randint(0, 4, (len(batch["target"]), self.n_items), generator=g).double() / 3


def test_one_pass_full_ranking_equals_the_reference_with_ties(tmp_path):
    from hafvt.candidates import load_or_draw
    from hafvt.config import load_config
    from hafvt.data.batches import scenario_views
    from hafvt.data.c2dsr import read_scenario
    from hafvt.models import build_model
    from hafvt.train import load_tables, rank_split
    from helpers import tiny_demo

    d = tiny_demo(tmp_path)
    scn = read_scenario(d)
    cfg = load_config(overrides={"q": 16})
    test = scenario_views(scn, cfg.maxlen)["test"]
    cands = torch.from_numpy(load_or_draw(d, "test", scn.split("test").targets, scn.n_x, scn.n_y, 99, 0))
    torch.manual_seed(0)
    model = build_model(cfg, scn, load_tables(d, cfg)[0])
    for m in (model, _TiedScores(scn.n_items)):
        ref = _rank_split_reference(m, test, cands, scn.n_x)
        got = rank_split(m, test, cands, scn.n_x)
        assert set(got) == set(ref)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=str(k))
    assert (ref[("full", "average")] != ref[("full", "target")]).mean() > 0.9  # the tied case has ties
    got = rank_split(_TiedScores(scn.n_items), test, cands, scn.n_x, batch_size=7)  # uneven batches
    assert (got[("full", "target")] >= 1).all() and len(got[("full", "target")]) == len(test)
