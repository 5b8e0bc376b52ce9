import math

import pytest
import torch

from hafvt import metrics as M
from hafvt.metrics import (
    TIE_POLICIES,
    format_table_row,
    full_ranks,
    metrics_from_ranks,
    per_domain,
    sampled_ranks,
)


def test_tie_policies():
    assert TIE_POLICIES == ("target", "average", "against")


def test_sampled_ranks_ties_each_policy():
    # target 0.5; negatives: 0.9 (greater), 0.5, 0.5 (equal), 0.1 (less)
    s = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]])
    assert sampled_ranks(s, "target").tolist() == [2.0]  # 1 + 1
    assert sampled_ranks(s, "average").tolist() == [3.0]  # 1 + 1 + 2/2
    assert sampled_ranks(s, "against").tolist() == [4.0]  # 1 + 1 + 2
    assert sampled_ranks(s).dtype == torch.float64


def test_sampled_ranks_all_equal():
    # all 4 scores equal: target rule -> 1, average -> 1 + 3/2 = 2.5, against -> 4
    s = torch.zeros(2, 4)
    assert sampled_ranks(s, "target").tolist() == [1.0, 1.0]
    assert sampled_ranks(s, "average").tolist() == [2.5, 2.5]
    assert sampled_ranks(s, "against").tolist() == [4.0, 4.0]


def test_sampled_ranks_duplicate_negatives_count_separately():
    # the same negative drawn twice with score 2 > 1: two greater -> rank 3
    s = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    assert sampled_ranks(s).tolist() == [3.0]


def test_sampled_ranks_bad_input():
    with pytest.raises(ValueError):
        sampled_ranks(torch.zeros(2, 3), tie="random")
    with pytest.raises(ValueError):
        sampled_ranks(torch.tensor([[float("nan"), 1.0]]))


def test_metrics_hand_values():
    # ranks 1, 3, 5, 10, 11, 100
    r = torch.tensor([1.0, 3.0, 5.0, 10.0, 11.0, 100.0])
    m = metrics_from_ranks(r)
    assert m["n"] == 6
    # MRR has no cut-off: (1 + 1/3 + 1/5 + 1/10 + 1/11 + 1/100) / 6
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 0.2 + 0.1 + 1 / 11 + 0.01) / 6)
    # gains: rank1 -> 1/log2(2)=1, rank3 -> 1/log2(4)=0.5,
    # rank5 -> 1/log2(6)=0.386853, rank10 -> 1/log2(11)=0.289065
    g5 = 1 / math.log2(6)
    g10 = 1 / math.log2(11)
    assert g5 == pytest.approx(0.386853, abs=1e-6)
    assert g10 == pytest.approx(0.289065, abs=1e-6)
    # NDCG@5 keeps ranks 1, 3, 5 (5 is on the boundary, included)
    assert m["ndcg@5"] == pytest.approx((1 + 0.5 + g5) / 6)
    # NDCG@10 also keeps rank 10 (boundary), not 11
    assert m["ndcg@10"] == pytest.approx((1 + 0.5 + g5 + g10) / 6)
    assert m["hr@1"] == pytest.approx(1 / 6)
    assert m["hr@5"] == pytest.approx(3 / 6)
    assert m["hr@10"] == pytest.approx(4 / 6)
    assert all(isinstance(m[k], float) for k in M.METRIC_KEYS)


def test_metrics_rank_beyond_10_only_mrr():
    m = metrics_from_ranks(torch.tensor([20.0, 50.0]))
    assert m["mrr"] == pytest.approx((0.05 + 0.02) / 2)
    assert m["ndcg@5"] == m["ndcg@10"] == m["hr@1"] == m["hr@5"] == m["hr@10"] == 0.0


def test_metrics_fractional_ranks():
    # rank 5.5 is outside the top 5 but inside the top 10; 10.5 outside both
    m = metrics_from_ranks(torch.tensor([5.5, 10.5]))
    assert m["hr@5"] == 0.0
    assert m["hr@10"] == 0.5
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(6.5) / 2)
    assert m["mrr"] == pytest.approx((1 / 5.5 + 1 / 10.5) / 2)


def test_metrics_empty():
    m = metrics_from_ranks(torch.empty(0))
    assert m["n"] == 0
    assert all(math.isnan(m[k]) for k in M.METRIC_KEYS)


def test_full_ranks_ties_and_policies():
    # row 0: target col 2 (0.5); others 0.9 > , 0.5 ==, 0.1 <
    # row 1: target col 0 (0.7) is the strict maximum -> rank 1 under all
    s = torch.tensor([[0.9, 0.5, 0.5, 0.1], [0.7, 0.2, 0.3, 0.1]])
    t = torch.tensor([2, 0])
    assert full_ranks(s, t, "target").tolist() == [2.0, 1.0]
    assert full_ranks(s, t, "average").tolist() == [2.5, 1.0]
    assert full_ranks(s, t, "against").tolist() == [3.0, 1.0]


def test_full_ranks_exclude():
    # target col 3 (0.4); cols 0,1 greater, col 2 equal, col 4 less.
    # excluding cols 0 and 2: one greater left (col 1), no ties
    s = torch.tensor([[0.9, 0.8, 0.4, 0.4, 0.1]])
    t = torch.tensor([3])
    ex = torch.tensor([[True, False, True, False, False]])
    assert full_ranks(s, t, "target").tolist() == [3.0]
    assert full_ranks(s, t, "against").tolist() == [4.0]
    assert full_ranks(s, t, "target", exclude=ex).tolist() == [2.0]
    assert full_ranks(s, t, "against", exclude=ex).tolist() == [2.0]
    with pytest.raises(ValueError):
        full_ranks(s, t, exclude=torch.tensor([[False, False, False, True, False]]))


def test_full_ranks_chunked(monkeypatch):
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (37, 11), generator=g).float()  # many ties
    t = torch.randint(0, 11, (37,), generator=g)
    ex = torch.rand(37, 11, generator=g) < 0.3
    ex[torch.arange(37), t] = False
    want = {p: full_ranks(s, t, p, ex) for p in TIE_POLICIES}
    monkeypatch.setattr(M, "_CHUNK_ELEMS", 23)  # 2 rows per chunk
    for p in TIE_POLICIES:
        assert torch.equal(full_ranks(s, t, p, ex), want[p])
    # reference by explicit loop
    for i in range(37):
        keep = ~ex[i]
        keep[t[i]] = False
        ts = s[i, t[i]]
        gt = int((s[i][keep] > ts).sum())
        eq = int((s[i][keep] == ts).sum())
        assert want["target"][i] == 1 + gt
        assert want["average"][i] == 1 + gt + eq / 2
        assert want["against"][i] == 1 + gt + eq


def test_sampled_equals_full_when_candidates_are_whole_domain():
    # candidate set = target + every other item of the domain, once each
    g = torch.Generator().manual_seed(1)
    n, m = 20, 9
    s = torch.randint(0, 4, (n, m), generator=g).float()
    t = torch.randint(0, m, (n,), generator=g)
    cols = torch.arange(m).expand(n, m)
    others = cols[cols != t[:, None]].reshape(n, m - 1)
    cand = torch.cat([t[:, None], others], dim=1)
    sampled = s.gather(1, cand)
    for p in TIE_POLICIES:
        assert torch.equal(sampled_ranks(sampled, p), full_ranks(s, t, p))


def test_per_domain():
    ranks = torch.tensor([1.0, 2.0, 4.0, 100.0])
    dom = torch.tensor([0, 1, 0, 1])
    out = per_domain(ranks, dom)
    assert out["X"]["n"] == 2 and out["Y"]["n"] == 2
    assert out["X"]["mrr"] == pytest.approx((1 + 0.25) / 2)
    assert out["Y"]["mrr"] == pytest.approx((0.5 + 0.01) / 2)
    assert out["X"]["hr@1"] == 0.5 and out["Y"]["hr@1"] == 0.0
    # one domain empty -> NaN, not an error
    out = per_domain(torch.tensor([1.0]), torch.tensor([0]))
    assert out["Y"]["n"] == 0 and math.isnan(out["Y"]["mrr"])


def test_format_table_row():
    m = {"mrr": 0.0916, "ndcg@5": 0.07951, "ndcg@10": 0.1}
    assert format_table_row(m) == "9.16  7.95  10.00"
