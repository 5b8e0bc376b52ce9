"""The speed paths compute what the plain paths compute: the chunked loss, the batched encoders,
the padded last batch, the one-pass full ranking."""
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


# the full configuration (ids, images, titles; three views) with q != e (two stacks: id, img+tex) and
# q = e (one stack of nine), and reduced ones (id + image merged: two encoders; id alone, three views)
BATCHED_CASES = {"full": {}, "full-one-width": {"q": 6}, "id-img-merged": {"modalities": ["id", "img"], "views": "merged", "alpha": 0.7},
                 "id-hier-domain-2x2": {"modalities": ["id"], "view_softmax": "domain", "n_blocks": 2, "n_heads": 2},
                 "no-positions": {"positional": "none"}}


def _loss_grads_explain(model, b, counts=None):
    model.zero_grad(set_to_none=True)
    loss = model.loss(b, counts)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}, model.explain(b)


# The longest reduction in these gradients: a batch of 2 lines x 5 positions x width 6-8 (the tests' model),
# so at most ~64 float32 roundings accumulate into one element.
REDUCTION = 64


def assert_same_sum_reordered(got: torch.Tensor, want: torch.Tensor, msg: str = "", n: int = REDUCTION) -> None:
    """Two float32 computations of the same sums in another order (batched vs one-by-one encoders): the
    classical bound on a reordered float32 sum of n terms is n * eps * (sum of |terms|), and the terms of a
    gradient element are bounded by the tensor's largest element, so the bound is n * eps * max|want|
    over the tensor. An element-wise rtol is wrong here: an element that is a small difference of large
    terms (cancellation) carries the absolute error of the large ones. That the paths compute the same
    thing exactly is shown in float64 (test_batched_encoders_equal_one_by_one_in_float64)."""
    atol = n * torch.finfo(torch.float32).eps * float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=lambda m: f"{msg}: {m} (bound n={n}: {atol:.3g})")


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case", BATCHED_CASES)
def test_batched_encoders_equal_one_by_one_in_float64(case, mode):
    """The whole model in float64: batched and one-by-one encoders give the same loss and gradients to
    1e-9 of each tensor's scale (float64 reordering is ~1e-15; the logits' float32 cast rounds identical
    float64 values identically)."""
    from test_model import batch, make_model

    out = {}
    for batched in (False, True):
        model = make_model(batched_encoders=batched, **BATCHED_CASES[case]).train(mode == "train").double()
        out[batched] = _loss_grads_explain(model, batch())[:2]
    (loss0, g0), (loss1, g1) = out[False], out[True]
    torch.testing.assert_close(loss1, loss0, rtol=1e-9, atol=1e-9)
    for k in g0:
        if g0[k] is not None:
            scale = float(g0[k].abs().max())
            torch.testing.assert_close(g1[k], g0[k], rtol=0, atol=1e-9 * max(scale, 1e-30), msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case", BATCHED_CASES)
def test_batched_encoders_give_the_same_loss_gradients_and_attention(case, mode):
    """cfg.batched_encoders: the same parameters (same names: checkpoints load either way), loss, gradients, weights."""
    from test_model import batch, make_model

    out, states = {}, {}
    for batched in (False, True):
        model = make_model(batched_encoders=batched, **BATCHED_CASES[case]).train(mode == "train")  # dropout 0
        states[batched] = model.state_dict()
        out[batched] = _loss_grads_explain(model, batch())
    assert states[True].keys() == states[False].keys()
    for k in states[False]:
        assert torch.equal(states[True][k], states[False][k]), k
    (loss0, g0, ex0), (loss1, g1, ex1) = out[False], out[True]
    torch.testing.assert_close(loss1, loss0, rtol=1e-6, atol=1e-6)
    assert {n for n, g in g0.items() if g is None} == {n for n, g in g1.items() if g is None}
    for n in g0:
        if g0[n] is not None:
            assert_same_sum_reordered(g1[n], g0[n], msg=n)
    assert ex0["attention"].keys() == ex1["attention"].keys()
    for pair, blocks in ex0["attention"].items():
        assert len(blocks) == len(ex1["attention"][pair])
        for w0, w1 in zip(blocks, ex1["attention"][pair]):
            assert w1.shape == w0.shape
            torch.testing.assert_close(w1, w0, rtol=1e-5, atol=1e-6)
    for k in ex0["modality_probs"]:
        torch.testing.assert_close(ex1["modality_probs"][k], ex0["modality_probs"][k], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ex1["fused"], ex0["fused"], rtol=1e-5, atol=1e-7)


def test_stacked_encoders_equal_one_after_another_in_float64():
    """run_stacked is the K encoders' computation, not an approximation: outputs and every gradient to 1e-12."""
    from hafvt.config import load_config
    from hafvt.models.attention import Encoder, run_stacked

    torch.manual_seed(0)
    cfg = load_config(overrides={"dropout": 0.0, "n_blocks": 2, "n_heads": 2, "maxlen": 5})
    encs = [Encoder(8, cfg).double() for _ in range(3)]
    X = torch.randn(3, 2, 5, 8, dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([[[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]], [[0, 0, 1, 2, 3], [0, 0, 0, 0, 1]], [[0, 0, 0, 0, 0], [1, 2, 3, 4, 5]]])
    G = torch.randn(3, 2, 5, 8, dtype=torch.float64)

    def outputs_and_grads(H):
        params = [p for e in encs for p in e.parameters()]
        return [H, *torch.autograd.grad((H * G).sum(), [X, *params])]

    ref = outputs_and_grads(torch.stack([e(X[k], pos[k])[0] for k, e in enumerate(encs)]))
    got = outputs_and_grads(run_stacked(encs, X, pos)[0])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_batched_encoders_compile_to_one_graph():
    """The stacked pass traces without graph breaks (what compile_encoders compiles on CUDA)."""
    from test_model import batch, make_model

    from hafvt.models.attention import run_stacked

    model, b = make_model(batched_encoders=True, q=6).train(), batch()
    ref = model.loss(b)
    model.run_stacked = torch.compile(run_stacked, backend="eager", fullgraph=True)
    torch.testing.assert_close(model.loss(b), ref)


@pytest.mark.parametrize("batched", [False, True])
def test_padded_batch_gives_the_same_loss_and_gradients(batched):
    """Lines without targets added to a batch (pad_batch) change neither the loss (a mean over real targets) nor its gradients."""
    from test_model import batch, make_model

    from hafvt.data.batches import VIEW_INDEX
    from hafvt.train import pad_batch

    model, b = make_model(batched_encoders=batched).train(), batch()
    counts = {v: int((b["tgt"][:, VIEW_INDEX[v]] >= 0).sum()) for v in model.views}
    ref = _loss_grads_explain(model, b, counts)
    for padded, c in ((pad_batch(b, 5), counts), (pad_batch(b, 5), None)):
        assert len(padded["seq"]) == 5
        loss, grads, _ = _loss_grads_explain(model, padded, c)
        torch.testing.assert_close(loss, ref[0], rtol=1e-6, atol=1e-6)
        for n, g in grads.items():  # padded rows change the matmuls' shapes, so their summation order
            assert_same_sum_reordered(g, ref[1][n], msg=n)


def test_padded_last_batch_gives_the_same_epoch(tmp_path):
    """Padding the short last batch (cfg.pad_last_batch: no recompilation when compiled) changes neither loss nor update."""
    from hafvt.config import load_config
    from hafvt.data.batches import scenario_views
    from hafvt.data.c2dsr import read_scenario
    from hafvt.models import build_model
    from hafvt.train import load_tables, make_optimizer, pad_batch, train_epoch
    from helpers import tiny_demo

    d = tiny_demo(tmp_path)
    scn = read_scenario(d)
    runs = {}
    for pad in (False, True):
        cfg = load_config(overrides={"q": 16, "batch_size": 48, "dropout": 0.0, "pad_last_batch": pad})
        train = scenario_views(scn, cfg.maxlen)["train"]
        assert len(train) % cfg.batch_size, "the last batch must be short for this test"
        torch.manual_seed(0)
        model = build_model(cfg, scn, load_tables(d, cfg)[0])
        opt = make_optimizer(model, cfg, torch.device("cpu"))
        loss = train_epoch(model, opt, train, cfg, 0, 1, torch.device("cpu"), False)
        runs[pad] = loss, [p.detach().clone() for p in model.parameters()]
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-6)
    for a, b in zip(runs[True][1], runs[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    b = pad_batch(train.index(torch.arange(5)), 8)
    assert len(b["seq"]) == 8 and (b["tgt"][5:] == -1).all() and torch.equal(b["tgt"][:5], train.tgt[:5])


@pytest.mark.parametrize("batched", [False, True])
def test_padded_last_batch_compiles_nothing_new(tmp_path, batched):
    """With pad_last_batch the compiled encoders see one shape all epoch: the short last batch adds no graph."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from hafvt.config import load_config
    from hafvt.data.batches import scenario_views
    from hafvt.data.c2dsr import read_scenario
    from hafvt.models import build_model
    from hafvt.train import load_tables, make_optimizer, train_epoch
    from helpers import tiny_demo

    d = tiny_demo(tmp_path)
    scn = read_scenario(d)
    graphs = {}
    for pad in (True,) if batched else (False, True):  # the unpadded control once (its retrace is slow)
        cfg = load_config(overrides={"q": 16, "batch_size": 48, "pad_last_batch": pad, "batched_encoders": batched})
        train = scenario_views(scn, cfg.maxlen)["train"]
        steps = -(-len(train) // cfg.batch_size)
        assert len(train) % cfg.batch_size, "the last batch must be short for this test"
        model = build_model(cfg, scn, load_tables(d, cfg)[0])
        opt = make_optimizer(model, cfg, torch.device("cpu"))
        torch._dynamo.reset()
        counters.clear()
        model.compile_encoders(backend="eager")  # dynamo's graph capture only: what decides recompilation
        train_epoch(model, opt, train, cfg, 0, 1, torch.device("cpu"), False, max_steps=steps - 1)
        before = counters["stats"]["unique_graphs"]
        train_epoch(model, opt, train, cfg, 0, 1, torch.device("cpu"), False)  # the whole epoch: its last batch is short
        graphs[pad] = before, counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert graphs[True][0] > 0 and graphs[True][1] == graphs[True][0]
    if not batched:
        assert graphs[False][1] > graphs[False][0]  # the control: unpadded, the short batch is a new shape


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


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compile_mode_reaches_torch_compile_and_is_checked(monkeypatch, batched, mode):
    """cfg.compile_mode (reduce-overhead = CUDA graphs) is what torch.compile gets for every encoder pass;
    the model still computes the same loss afterwards (the spy returns the function uncompiled)."""
    from test_model import batch, make_model

    from hafvt.config import load_config
    from hafvt.train import compile_model

    model, b = make_model(batched_encoders=batched, q=6, compile_mode=mode).train(), batch()  # dropout 0
    before = model.loss(b).item()
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    compile_model(model, model.cfg)
    assert calls and all(kw == ({} if mode == "default" else {"mode": mode}) for kw in calls)
    assert len(calls) == (1 if batched else len(model.enc))
    after = model.loss(b).item()
    assert after == pytest.approx(before)
    with pytest.raises(ValueError, match="compile_mode"):
        load_config(overrides={"compile_mode": "fast"})
