"""Tri-CDR baseline (learning the chain, the demo and the real files: tests/test_baselines.py): its
two distinguishing parts work: the triple contrastive loss has gradient (and its margin is enforced), and
the triple cross-domain attention reads only slots up to the query's (no look-ahead)."""
import pytest
import torch

from hafvt.data.batches import build_views
from hafvt.data.c2dsr import read_scenario
from hafvt.models import build_model
from test_baselines import cfg_of, demo, one_thread  # noqa: F401 (fixtures)





def _model_and_batch(demo, **over):
    torch.manual_seed(0)
    scn = read_scenario(demo)
    model = build_model(cfg_of("tricdr", dropout=0.0, **over), scn)
    batch = build_views(scn.train, scn.n_x, scn.n_items).index(torch.arange(64))
    return model, batch


def test_triple_contrastive_loss_is_nonzero_has_gradient_and_enforces_the_margin(demo):
    model, batch = _model_and_batch(demo)
    H = model.encode(batch)
    tgt = batch["tgt"][:, 2]
    L = tgt.shape[1]
    _, parts = model.represent(H, batch, tgt >= model.n_x, torch.arange(L))
    coarse, fine = model.tcl(parts, batch, tgt[:, -1] >= model.n_x, tgt[:, -1] >= 0)
    assert coarse > 0 and fine > 0
    (coarse + fine).backward()
    for name in ("g", "tca_in", "enc"):  # TCL reaches the projection heads, the TCA and the encoders
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name
    # the full loss changes with the TCL weights (the extra objective is part of training)
    model.eval()
    with torch.no_grad():
        base = model.loss(batch)
        model.cfg.tricdr_cl_weight = model.cfg.tricdr_triplet_weight = 0.0
        assert model.loss(batch) < base


@pytest.mark.parametrize("dist,expected", [(0.25, 0.75), (2.0, 0.0)])
def test_fine_grained_loss_is_the_triplet_margin_source_mixed_target(demo, dist, expected):
    """With identity heads and z^m = z^s, L_fine = max(0, margin - ||z^s - z^t||); with z^m = z^t it is the margin."""
    model, batch = _model_and_batch(demo, tricdr_margin=1.0)
    model.g = torch.nn.ModuleDict({r: torch.nn.Identity() for r in ("m", "s", "t")})
    z_s = torch.zeros(len(batch["seq"]), 1, model.d)
    z_t = z_s.clone()
    z_t[..., 0] = dist
    tgt = batch["tgt"][:, 2, -1]
    args = (batch, tgt >= model.n_x, tgt >= 0)
    assert model.tcl({"m": z_s, "s": z_s, "t": z_t}, *args)[1].item() == pytest.approx(expected, abs=1e-4)
    assert model.tcl({"m": z_t, "s": z_s, "t": z_t}, *args)[1].item() == pytest.approx(1.0, abs=1e-4)


def test_triple_cross_domain_attention_does_not_look_ahead(demo):
    """The representation at slot s depends on slots <= s only, and at the last slot scoring equals training's."""
    model, batch = _model_and_batch(demo)
    model.eval()
    L = batch["seq"].shape[-1]
    ty = batch["tgt"][:, 2] >= model.n_x
    with torch.no_grad():
        u, _ = model.represent(model.encode(batch), batch, ty, torch.arange(L))
        changed = {k: v.clone() for k, v in batch.items()}
        changed["seq"][:, :, -1] = torch.where(changed["seq"][:, :, -1] == model.n_items, model.n_items,
                                               (changed["seq"][:, :, -1] + 1) % model.n_items)
        u2, _ = model.represent(model.encode(changed), changed, ty, torch.arange(L))
        assert torch.allclose(u[:, :-1], u2[:, :-1], atol=1e-5)  # earlier slots ignore the last one
        assert not torch.allclose(u[:, -1], u2[:, -1])
        # the TCA weights: a query with no allowed key gives u = 0
        H = model.encode(batch)["x"]
        none = torch.zeros(len(H), 1, L, dtype=torch.bool)
        out = model.tca(H[:, -1:], H[:, -1:], H, none)
        assert torch.equal(out, torch.zeros_like(out))
        # scoring reads the last slot with the line's own domain as the target
        last_dom = batch["tgt"][:, 2, -1] >= model.n_x
        b = {**batch, "domain": last_dom.long()}
        s = model.scores(b)
        u_last, _ = model.represent(model.encode(batch), batch, last_dom[:, None], torch.tensor([L - 1]))
        assert s.dtype == torch.float64 and torch.allclose(s.float(), model.cosine(u_last[:, 0]), atol=1e-5)


