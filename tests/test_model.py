"""The HAF-VT model: equations (2), (7), (10) on hand-made inputs."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hafvt.config import load_config, modality_weights
from hafvt.data.batches import build_views
from hafvt.data.c2dsr import Sequences
from hafvt.models.hafvt import HAFVT

N_X, N_Y = 4, 5


def make_model(**over):
    cfg = load_config(overrides={"q": 8, "maxlen": 5, "dropout": 0.0, **over})
    rng = np.random.default_rng(0)
    tables = {m: rng.standard_normal((N_X + N_Y, 6)).astype(np.float32) for m in ("img", "tex")}
    torch.manual_seed(0)
    return HAFVT(cfg, N_X, N_Y, tables["img"], tables["tex"]).eval()


def batch():
    seqs = Sequences.from_lists([0, 1], [0, 1], [[0, 5, 1, 6, 2], [4, 1, 7, 2, 8]], [[1, 2, 3, 4, 5]] * 2)
    return build_views(seqs, N_X, N_X + N_Y, maxlen=5).index(torch.arange(2))


def test_eq10_sum_of_view_probabilities():
    model, b = make_model(), batch()
    h, _ = model.representations(b)
    w = modality_weights(model.cfg)
    # eq. (2) and (7) written out: softmax of cosine / tau per modality, mixed with alpha, beta
    P = {}
    for v in ("x", "y", "xy"):
        P[v] = 0
        for m in ("id", "img", "tex"):
            E = model.table(m)[: N_X + N_Y]
            cos = F.normalize(h[v][m].double(), dim=-1) @ F.normalize(E.double(), dim=-1).T
            P[v] = P[v] + w[m] * torch.softmax(cos / model.cfg.temperature, -1)
    l1, l2 = model.cfg.lambda1, model.cfg.lambda2
    scores = model.scores(b)
    # line 0's target (2) is in X: P^X + l1 P^Y + l2 P^{X+Y}; line 1's target (8) is in Y: roles swapped
    assert torch.allclose(scores[0], P["x"][0] + l1 * P["y"][0] + l2 * P["xy"][0], atol=1e-6)
    assert torch.allclose(scores[1], P["y"][1] + l1 * P["x"][1] + l2 * P["xy"][1], atol=1e-6)
    assert w == {"id": 0.6, "img": 0.2, "tex": pytest.approx(0.2)}


def test_merged_uses_the_mixed_view_only():
    model, b = make_model(views="merged", modalities=["id", "img"], alpha=0.7), batch()
    assert list(model.enc) == ["xy_id", "xy_img"]
    h, _ = model.representations(b)
    assert torch.allclose(model.scores(b), model.view_probs(h["xy"], "xy"))


def test_domain_softmax_gives_zero_to_the_other_domain():
    model, b = make_model(view_softmax="domain"), batch()
    h, _ = model.representations(b)
    assert model.view_probs(h["y"], "y")[:, :N_X].abs().max() == 0  # P^Y(x) = 0 for X items


def test_loss_is_finite_and_attention_weights_are_distributions():
    model, b = make_model(), batch()
    model.train()
    loss = model.loss(b)
    loss.backward()
    assert torch.isfinite(loss) and model.E_id.weight.grad.abs().sum() > 0
    out = model.explain(b)
    w = out["attention"][("x", "img")][0]  # (B, heads, L, L), first block
    assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)))
    assert torch.all(w.triu(1) == 0)  # causal
    assert out["fused"].shape == (2, N_X + N_Y)


def test_missing_table_is_named():
    cfg = load_config(overrides={"modalities": ["id", "img"]})
    with pytest.raises(ValueError, match="img"):
        HAFVT(cfg, N_X, N_Y, None, None)


def test_softmax_nll_equals_cross_entropy_with_mask():
    from hafvt.models.hafvt import softmax_nll

    g = torch.Generator().manual_seed(0)
    q, E = torch.randn(7, 5, generator=g), torch.randn(11, 5, generator=g)
    target = torch.tensor([0, 3, 10, 4, 4, 1, 2])
    mask = torch.zeros(11, dtype=torch.bool)
    mask[7:] = True
    mask_target = target.clone()
    mask_target[2] = 5  # a masked item is never a target
    assert torch.allclose(softmax_nll(q, E, target), F.cross_entropy(q @ E.T, target, reduction="none"), atol=1e-5)
    assert torch.allclose(softmax_nll(q, E, mask_target, mask),
                          F.cross_entropy((q @ E.T).masked_fill(mask, float("-inf")), mask_target, reduction="none"), atol=1e-5)


# Eq. (7) weights and eq. (9) view weights written out per case (not taken from the model).
LOSS_CASES = {
    "hierarchical": ({}, {"id": 0.5, "img": 0.3, "tex": 0.2}, {"x": 1.0, "y": 0.25, "xy": 0.7}),
    "merged": ({"views": "merged"}, {"id": 0.5, "img": 0.3, "tex": 0.2}, {"xy": 1.0}),
    "ifcdsr": ({"modalities": ["id", "img"]}, {"id": 0.5, "img": 0.5}, {"x": 1.0, "y": 0.25, "xy": 0.7}),
    "domain-softmax": ({"view_softmax": "domain"}, {"id": 0.5, "img": 0.3, "tex": 0.2}, {"x": 1.0, "y": 0.25, "xy": 0.7}),
    "symmetric": ({"loss_form": "symmetric"}, {"id": 0.5, "img": 0.3, "tex": 0.2}, {"x": 1.25, "y": 1.25, "xy": 1.4}),
}


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_loss_equals_eqs_7_to_9_by_hand(case):
    over, w, lam = LOSS_CASES[case]
    model = make_model(alpha=0.5, beta=0.3, lambda1=0.25, lambda2=0.7, temperature=0.2, **over)
    b = batch()
    rng = np.random.default_rng(0)  # the raw tables make_model gave the model
    raw = {m: torch.as_tensor(rng.standard_normal((N_X + N_Y, 6)), dtype=torch.float32).double() for m in ("img", "tex")}
    raw["id"] = model.E_id.weight[: N_X + N_Y].double()
    views = ("xy",) if case == "merged" else ("x", "y", "xy")
    expected = 0.0
    for v in views:
        i = {"x": 0, "y": 1, "xy": 2}[v]
        tgt = b["tgt"][:, i]  # (B, L) next item of every slot, -1 where none
        P = 0.0
        for m, wm in w.items():
            H = model.encode(b, v, m)[0].double()  # (B, L, d): eq. (1), the encoder's output at every slot
            E = raw[m]
            cos = (H / H.norm(dim=-1, keepdim=True)) @ (E / E.norm(dim=-1, keepdim=True)).T
            logits = cos / 0.2
            if case == "domain-softmax" and v != "xy":  # S^X over X items only, S^Y over Y items only
                other = torch.arange(N_X + N_Y) >= N_X if v == "x" else torch.arange(N_X + N_Y) < N_X
                logits = logits.masked_fill(other, float("-inf"))
            P = P + wm * torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True)  # P^V_m, eq. (7) mix
        has = tgt >= 0
        p_next = P[has].gather(1, tgt[has][:, None]).squeeze(1)
        assert len(p_next) > 1
        expected = expected + lam[v] * (-torch.log(p_next)).mean()  # eq. (8), mean per view; eq. (9)
    counts = {v: int((b["tgt"][:, {"x": 0, "y": 1, "xy": 2}[v]] >= 0).sum()) for v in views}
    assert model.loss(b).item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.loss(b, counts).item() == pytest.approx(expected.item(), rel=1e-5)


def test_item_lookups_give_the_same_gradient_on_every_repeat_with_threads():
    """hafvt.models.lookup.rows: repeated indices sum in a fixed order, with 2 threads too. Negative control:
    advanced indexing (E[target]), which the model used before, adds them with atomics across threads once the
    gradient has more than 32,768 elements (here 5,000 x 32), so its repeats differ (measured: 29 of 29)."""
    from hafvt.models.lookup import rows

    g = torch.Generator().manual_seed(0)
    E, q = torch.randn(350, 32, generator=g), torch.randn(5000, 32, generator=g)
    t = torch.randint(0, 350, (5000,), generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        def grads(lookup):
            out = []
            for _ in range(12):
                Eg = E.clone().requires_grad_()
                (q * lookup(Eg)).sum().backward()
                out.append(Eg.grad)
            return out

        fixed = grads(lambda Eg: rows(Eg, t))
        assert all(torch.equal(x, fixed[0]) for x in fixed)
        assert torch.equal(rows(E, t), E[t]) and rows(E, t[None]).shape == (1, 5000, 32)
        indexed = grads(lambda Eg: Eg[t])
        if (os.cpu_count() or 1) >= 2:
            assert any(not torch.equal(x, indexed[0]) for x in indexed), "the negative control did not vary"
    finally:
        torch.set_num_threads(threads)
