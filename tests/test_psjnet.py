"""PSJNet (learning the chain, the demo and the real files: tests/test_baselines.py): its split/join carries the
other domain into a domain's recommendation (never from after the predicted item)."""
import torch

from hafvt.data.batches import VIEW_INDEX, build_views
from hafvt.data.c2dsr import read_scenario
from hafvt.models import build_model
from hafvt.models.baselines.psjnet import next_cutoff
from test_baselines import cfg_of, demo, one_thread  # noqa: F401 (fixtures)



def test_cutoff_is_the_slot_before_the_next_item_of_the_domain():
    real = torch.tensor([[False, True, False, False, True, False]])
    assert next_cutoff(real).tolist() == [[0, 3, 3, 3, 5, 5]]


def batch_and_model(demo_dir, **over):
    scn = read_scenario(demo_dir)
    torch.manual_seed(0)
    model = build_model(cfg_of("psjnet", dropout=0.0, **over), scn)
    views = build_views(scn.test, scn.n_x, scn.n_items)
    return scn, model, views.index(torch.arange(len(views)))


def replace_y(batch, scn, keep):
    """The batch with every Y item of the history at a slot not in ``keep`` replaced by another Y item."""
    b = {k: v.clone() for k, v in batch.items()}
    for i in (VIEW_INDEX["y"], VIEW_INDEX["xy"]):
        s = b["seq"][:, i]
        hit = (s >= scn.n_x) & (s < scn.n_items) & ~keep
        s[hit] = scn.n_x + (s[hit] - scn.n_x + 1) % scn.n_y
    return b


def test_the_join_carries_the_other_domain_and_needs_the_split(demo):  # noqa: F811
    """X scores change with the Y items (only through split -> join), and the roles get gradient."""
    scn, model, batch = batch_and_model(demo)
    model.eval()
    x_cols = slice(0, scn.n_x)
    b2 = replace_y(batch, scn, torch.zeros_like(batch["seq"][:, 0], dtype=torch.bool))
    has_y = (batch["seq"][:, VIEW_INDEX["y"]] != scn.n_items).any(1)
    assert has_y.sum() > 10
    moved = (model.scores(batch)[:, x_cols] - model.scores(b2)[:, x_cols]).abs().amax(1)
    assert (moved[has_y] > 1e-6).all() and (moved[~has_y] == 0).all()
    # cut the join (its output set to 0): the X scores no longer see Y at all
    for j in model.join.values():
        j.forward = lambda q, parts, allowed: torch.zeros_like(q)
    assert torch.equal(model.scores(batch)[:, x_cols], model.scores(b2)[:, x_cols])
    # the role embeddings of both split units are trained, and the K roles' parts differ
    _, model, batch = batch_and_model(demo, psjnet_k=3)
    model.train()
    model.loss(batch).backward()
    for D in ("x", "y"):
        g = model.split[D].r.grad
        assert g is not None and (g.abs().sum(1) > 0).all(), D
    h = torch.randn(2, 5, model.d)
    parts = model.split["x"](h, h)
    assert parts.shape == (2, 5, 3, model.d) and (parts[:, :, 0] - parts[:, :, 1]).abs().max() > 1e-4


def test_training_never_reads_the_other_domain_after_the_predicted_item(demo):  # noqa: F811
    """An X prediction at X slot i sees Y items up to the next X item only (a leak would learn the future)."""
    scn, model, batch = batch_and_model(demo)
    model.eval()
    real_x = batch["seq"][:, VIEW_INDEX["x"]] != scn.n_items
    with torch.no_grad():
        z = model.hybrid(batch)["x"]
        L = real_x.shape[1]
        # keep Y items up to each line's first cut-off; change the rest
        first_x = torch.where(real_x, torch.arange(L), L).min(1).values.clamp(max=L - 1)
        cut = next_cutoff(real_x).gather(1, first_x[:, None])
        keep = torch.arange(L)[None] <= cut
        z2 = model.hybrid(replace_y(batch, scn, keep))["x"]
    rows = torch.arange(len(z))
    changed_later = (~keep & (batch["seq"][:, VIEW_INDEX["y"]] != scn.n_items)).any(1) & real_x.any(1)
    assert changed_later.sum() > 5
    assert torch.allclose(z[rows, first_x], z2[rows, first_x], atol=1e-6)  # the first X prediction is unchanged
    assert not torch.allclose(z[:, -1][changed_later], z2[:, -1][changed_later])  # the last slot sees them


