"""The HAF-VT model: equations (2), (7), (10) on hand-made inputs."""
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
