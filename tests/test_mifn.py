"""MIFN (hafvt/models/baselines/mifn.py; learning the chain, the demo and the real files: tests/test_baselines.py):
its knowledge-graph substitute comes from training lines only and never shows a slot its future, and its
switch mixes the graph and sequence decoders as MIFN's decoder does."""
import numpy as np
import pytest
import torch

from hafvt.data.batches import build_views
from hafvt.data.c2dsr import read_scenario
from hafvt.models import build_model
from hafvt.models.baselines import mifn
from hafvt.models.baselines.mifn import cooccurrence_neighbours
from test_baselines import chain, cfg_of, one_thread  # noqa: F401 (fixtures)



def test_knowledge_graph_substitute_counts_training_lines_and_hides_the_future(chain):
    # co-occurrence in a line, most frequent first, ties to the more popular neighbour, then the lower id
    items = np.array([0, 1, 2, 0, 1, 4, 1, 3, 3, 5, 6, 7])  # lines 0 1 2 | 0 1 | 4 1 3 | 3 | 5 6 7
    nbr = cooccurrence_neighbours(items, np.array([0, 3, 5, 8, 9, 12]), n_items=8, k=2)
    assert nbr[0].tolist() == [1, 2]  # 1 shares two lines with 0
    assert nbr[1].tolist() == [0, 3]  # 2, 3, 4 share one line with 1; 3 is the most popular
    assert nbr[7].tolist() == [5, 6] and nbr[8].tolist() == [8, 8]  # equal count and popularity: lower id; padding row empty
    # the model's graph comes from the training split only: a test line's pairs are not in it
    scn = read_scenario(chain)
    model = build_model(cfg_of("mifn"), scn)
    train_only = cooccurrence_neighbours(scn.train.items, scn.train.offsets, scn.n_items, model.nbr.shape[1])
    assert np.array_equal(model.nbr.numpy(), train_only)
    # a node is visible at slot t iff an item at a slot <= t is it or has it as a neighbour
    b = build_views(scn.test, scn.n_x, scn.n_items).index(torch.arange(8))
    hist = b["seq"][:, 2]
    nodes, visible = model.subgraph(hist)
    nbr_t = model.nbr
    for r in range(len(hist)):
        for t in range(hist.shape[1]):
            seen = hist[r, : t + 1]
            want = set(seen.tolist()) | set(nbr_t[seen].flatten().tolist())
            want.discard(scn.n_items)
            got = nodes[r][visible[r, t]].tolist()
            assert len(got) == len(set(got)) and set(got) == want, (r, t)


def test_switch_mixes_the_graph_and_sequence_decoders(chain, monkeypatch):
    """P_G -> 1: the graph decoder ranks the domain's visible nodes first; P_G -> 0: the sequence decoder's
    softmax (its logits); and the switch loss trains the switch when the graph cannot point at the target."""
    scn = read_scenario(chain)
    torch.manual_seed(0)
    model = build_model(cfg_of("mifn", dropout=0.0), scn).eval()
    b = build_views(scn.test, scn.n_x, scn.n_items).index(torch.arange(32))
    in_y = b["domain"] == 1
    dom = (torch.arange(scn.n_items)[None, :] >= scn.n_x) == in_y[:, None]
    nodes, visible = model.subgraph(b["seq"][:, 2])
    node_mask = torch.zeros(len(in_y), scn.n_items + 1, dtype=torch.bool)
    node_mask.scatter_(1, nodes.masked_fill(~visible[:, -1], scn.n_items), True)  # the padding column collects the rest
    node_mask = node_mask[:, : scn.n_items] & dom  # the domain's nodes visible at the last slot
    assert node_mask.any(1).all()
    with torch.no_grad():
        for sw in model.switch.values():
            sw.weight.zero_()
            sw.bias.fill_(30.0)  # P_G = 1 - 1e-13
    s = model.scores(b)
    for r in range(len(s)):
        assert s[r][node_mask[r]].min() > s[r][dom[r] & ~node_mask[r]].max() + 10
    with torch.no_grad():
        for sw in model.switch.values():
            sw.bias.fill_(-30.0)  # P_G = 1e-13
    s = model.scores(b)
    H, T = model.behaviour(b["seq"])
    z = torch.cat([torch.where(in_y[:, None], H["y"][:, -1], H["x"][:, -1]),
                   torch.where(in_y[:, None], T["x"][:, -1], T["y"][:, -1])], -1)
    assert torch.allclose(s[dom].float(), model.out(z)[dom], atol=1e-4)  # the sequence decoder's logits (log p_S + a constant)
    # switch loss: zero while the graph can point at every target (the chain's successor is a neighbour) ...
    model.train()
    with torch.no_grad():
        for sw in model.switch.values():
            sw.bias.fill_(30.0)
    tb = build_views(scn.train, scn.n_x, scn.n_items).index(torch.arange(64))

    def loss_and_grads(batch, weight):
        monkeypatch.setattr(mifn, "SWITCH_WEIGHT", weight)
        model.zero_grad()
        loss = model.loss(batch)
        loss.backward()
        return loss.item(), torch.stack([sw.bias.grad[0] for sw in model.switch.values()])

    assert loss_and_grads(tb, 1.0)[0] == pytest.approx(loss_and_grads(tb, 0.0)[0])
    # ... and about 30 per target outside the subgraph when P_G is near 1, pushing both switches towards p_S
    t = tb["tgt"]
    rand = torch.where(t >= scn.n_x, torch.randint_like(t, scn.n_x, scn.n_items), torch.randint_like(t, 0, scn.n_x))
    tb["tgt"] = torch.where(t >= 0, rand, t)
    (l1, g1), (l0, g0) = loss_and_grads(tb, 1.0), loss_and_grads(tb, 0.0)
    assert l1 - l0 > 3 and (g1 - g0 > 0).all()
    assert model.W_in.weight.grad.abs().sum() > 0 and model.W_cr.weight.grad.abs().sum() > 0  # the knowledge flow learns
