"""C2DSR baseline (learning the chain, the demo and the real files: tests/test_baselines.py): its graphs, its
three tables, the CE terms' last-10 window, the infomax's masked means, and no look-ahead in scoring."""
import numpy as np
import pytest
import torch

from hafvt.data.batches import build_views
from hafvt.data.c2dsr import ItemTable, Scenario, Sequences, read_scenario
from hafvt.models import build_model
from hafvt.models.baselines import c2dsr
from test_baselines import cfg_of, demo, one_thread  # noqa: F401 (fixtures)


def lines_of(lines, uid0=0):
    uids = np.arange(uid0, uid0 + len(lines))
    return Sequences.from_lists(uids, uids, lines, [list(range(1, len(l) + 1)) for l in lines])


def small_scenario():
    """X items 0-3, Y items 4-6; the valid and test lines hold transitions that training never shows."""
    items = lambda n, p: ItemTable([f"{p}{i}" for i in range(n)], [f"{p}{i}" for i in range(n)])  # noqa: E731
    return Scenario(items_x=items(4, "x"), items_y=items(3, "y"), users=[(f"u{i}", i) for i in range(4)],
                    train=lines_of([[0, 4, 1, 1, 5, 0], [0, 4, 2, 6]]), valid=lines_of([[3, 6, 5, 3]], 2),
                    test=lines_of([[2, 3, 6, 4]], 3))


def dense(A):
    return A.to_dense().numpy()


def test_graphs_are_directed_binary_row_normalised_without_self_loops_from_training_lines_only():
    scn = small_scenario()
    model = build_model(cfg_of("c2dsr"), scn)
    A = {v: dense(getattr(model, f"A_{v}")) for v in ("xy", "x", "y")}
    assert [a.shape for a in A.values()] == [(7, 7), (4, 4), (3, 3)]
    # mixed: 0->4 (twice, one edge), 4->1, 1->5, 5->0, 4->2, 2->6; 1->1 dropped
    want = np.zeros((7, 7))
    for a, b in ((0, 4), (4, 1), (1, 5), (5, 0), (4, 2), (2, 6)):
        want[a, b] = 1
    want /= np.maximum(want.sum(1, keepdims=True), 1)
    np.testing.assert_allclose(A["xy"], want)
    assert A["xy"][0, 4] == 1 and A["xy"][4, 0] == 0  # directed
    assert A["xy"][4, 1] == A["xy"][4, 2] == 0.5  # row-normalised, D^-1 A
    # X lines 0 1 1 0 and 0 2: 0->1, 1->0, 0->2 (local ids); Y lines 4 5 and 4 6: 0->1, 0->2 (ids - 4)
    np.testing.assert_allclose(A["x"], [[0, .5, .5, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(A["y"], [[0, .5, .5], [0, 0, 0], [0, 0, 0]])
    for a in A.values():
        assert not np.diag(a).any()
    # valid/test transitions (3->6, 6->5, 5->3, 2->3, 3->6, 6->4) are absent; row 3 (item 3) is empty
    assert A["xy"][3].sum() == A["xy"][6].sum() == 0 and A["xy"][5, 3] == 0 and A["xy"][2, 3] == 0


def _model_and_batch(demo, maxlen=15, **over):
    torch.manual_seed(0)
    scn = read_scenario(demo)
    model = build_model(cfg_of("c2dsr", maxlen=maxlen, **over), scn).eval()
    return model, scn


def test_the_three_tables_are_separate_and_each_feeds_its_own_view(demo):
    model, scn = _model_and_batch(demo)
    sizes = {v: e.weight.shape[0] for v, e in model.E.items()}
    assert sizes == {"xy": scn.n_items + 1, "x": scn.n_x + 1, "y": scn.n_y + 1}
    assert len({e.weight.data_ptr() for e in model.E.values()}) == 3
    assert len({id(g) for g in model.gcn.values()}) == 3
    batch = build_views(scn.train, scn.n_x, scn.n_items).index(torch.arange(32))
    with torch.no_grad():
        H = model.hidden(model.tables(), batch)
        model.E["x"].weight.add_(0.1)  # only the X-only view reads E^X
        H2 = model.hidden(model.tables(), batch)
    real = batch["pos"][:, 0] > 0
    assert not torch.allclose(H["x"][real], H2["x"][real])
    assert torch.equal(H["xy"], H2["xy"]) and torch.equal(H["y"], H2["y"])


def loss_at(model, batch, seed=0):
    torch.manual_seed(seed)  # the same corrupted lines every call
    with torch.no_grad():
        return float(model.loss(batch))


def same_domain_other(t, n_x, n_items):
    """Another item of the target's domain (targets stay targets, -1 stays -1)."""
    x = (t + 1) % n_x
    y = n_x + (t - n_x + 1) % (n_items - n_x)
    return torch.where(t < 0, t, torch.where(t < n_x, x, y))


def test_the_ce_terms_read_only_the_last_10_slots(demo):
    model, scn = _model_and_batch(demo)
    batch = build_views(scn.train, scn.n_x, scn.n_items).index(torch.arange(128))
    L, used = batch["tgt"].shape[-1], c2dsr.USED
    early = slice(0, L - used)
    assert (batch["tgt"][:, :, early] >= 0).any(), "the lines must have targets before the window"
    base = loss_at(model, batch)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["tgt"][:, :, early] = same_domain_other(batch["tgt"][:, :, early], scn.n_x, scn.n_items)
    assert loss_at(model, changed) == pytest.approx(base, rel=1e-6)
    changed["tgt"][:, :, -1] = same_domain_other(batch["tgt"][:, :, -1], scn.n_x, scn.n_items)
    assert abs(loss_at(model, changed) - base) > 1e-4  # a target in the window counts


def test_infomax_reads_masked_means_so_more_padding_changes_nothing(demo, monkeypatch):
    """The same lines padded to 15 and to 20 slots give the same infomax, loss and scores."""
    model, scn = _model_and_batch(demo, maxlen=20)
    shift = lambda seq, v: torch.where(seq < scn.n_items, (seq + 1) % scn.n_items, seq)  # noqa: E731 (deterministic)
    monkeypatch.setattr(model, "corrupt", shift)
    b15, b20 = (build_views(scn.train, scn.n_x, scn.n_items, maxlen=L).index(torch.arange(64)) for L in (15, 20))
    assert (b20["pos"][:, :, :5] == 0).all() and torch.equal(b15["seq"], b20["seq"][..., 5:])  # only padding added
    with torch.no_grad():
        out = []
        for b in (b15, b20):
            T = model.tables()
            out.append((model.infomax(T, model.hidden(T, b), b), model.loss(b), model.scores(b)))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # a mean over every slot (padding included) would differ
    H15, H20 = (model.hidden(model.tables(), b)["x"] for b in (b15, b20))
    assert not torch.allclose(H15.mean(1), H20.mean(1), atol=1e-3)
    # it is a mean over the target slots, not the last slot: dropping early X slots from it changes it
    fewer = {k: v.clone() for k, v in b15.items()}
    fewer["tgt"][:, 0, :8] = -1
    with torch.no_grad():
        T = model.tables()
        assert abs(float(model.infomax(T, model.hidden(T, fewer), fewer) - out[0][0])) > 1e-4


def test_scores_use_the_prefix_only_and_training_s_specific_representation(demo):
    """Every prefix of a training line, scored as a line, equals the specific prediction at its slot in
    the whole line: no slot reads a later item, and scoring reads what the specific CE trains."""
    model, scn = _model_and_batch(demo)
    rows = list(range(24))
    full = build_views(scn.train, scn.n_x, scn.n_items).index(torch.tensor(rows))
    L = full["seq"].shape[-1]
    with torch.no_grad():
        H = model.hidden(model.tables(), full)
        spec = {v: model.specific(H, full, v)[0] for v in ("x", "y")}
        prefixes, where = [], []
        for r in rows:
            items = scn.train.sequence(r).tolist()
            k = len(items) - 1  # history length of the whole line (<= L on the demo)
            for p in range(1, k + 1):  # the prefix's history is items[:p]: slot L - k + p - 1 of the line
                prefixes.append(items[: p + 1])
                where.append((rows.index(r), L - k + p - 1))
        pb = build_views(lines_of(prefixes), scn.n_x, scn.n_items).index(torch.arange(len(prefixes)))
        s = model.scores(pb)
        i, t = map(torch.tensor, zip(*where))
        want = torch.cat([model.lin_X(spec["x"][i, t]), model.lin_Y(spec["y"][i, t])], -1)
    torch.testing.assert_close(s, want, rtol=1e-4, atol=1e-4)
