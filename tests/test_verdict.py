"""The verdict page's evidence: per-seed paired differences, 95% intervals, and words that follow them."""
import json

import numpy as np
import pytest

from hafvt.verdict import (BEST_BASELINE, CLAIMS, Claim, cell, committed_datasets, evidence, kernel_spread, load_tables, quoted_gain,
                           training_protocol, verdict)


def row(name, values_x, values_y=None, role="proposed", count_based=False):
    def m(v):
        return {"mrr": {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "values": list(v)}}
    vy = values_y if values_y is not None else values_x
    metrics = {"sampled": {"X": m(values_x), "Y": m(vy)}}
    return {"row": name, "seeds_done": len(values_x), "seeds": list(range(len(values_x))), "role": role,
            "count_based": count_based, "metrics": metrics, "metrics_average_ties": metrics}


def table(k, rows):
    return {"table": k, "rows": rows, "label": "test", "domains": {"X": "A", "Y": "B"}}


def test_interval_and_verdict_words():
    c = Claim("c", "a", "b", 4, None, "")
    t = table(4, [row("a", [10, 11, 12], [5, 5.5, 4.5]), row("b", [8, 9, 10], [5, 5, 5])])
    e = evidence(c, [t])
    assert e["X"]["per_seed"] == [2, 2, 2] and e["X"]["mean"] == 2 and e["X"]["verdict"] == "supports"
    assert e["Y"]["verdict"] == "inconclusive" and e["Y"]["ci95"][0] < 0 < e["Y"]["ci95"][1]
    # the interval is the t-interval over the paired per-seed differences
    t2 = table(4, [row("a", [1, 2, 3]), row("b", [3, 5, 4])])
    d = np.array([-2, -3, -1.0])
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)
    e = evidence(c, [t2])["X"]
    assert e["verdict"] == "inconclusive" and e["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])


def test_a_difference_inside_the_kernel_spread_is_no_difference(tmp_path):
    c = Claim("c", "a", "b", 4, None, "")
    t = table(4, [row("a", [10, 10.2, 10.1], [20, 20, 20.1]), row("b", [9, 9.1, 9.0], [21, 21.2, 21.1])])
    assert [evidence(c, [t])[d]["verdict"] for d in ("X", "Y")] == ["supports", "contradicts"]
    e = evidence(c, [t], spread=1.2)  # |+1.07| and |-1.07| are inside, a larger difference is not
    assert [e[d]["verdict"] for d in ("X", "Y")] == ["inconclusive", "inconclusive"] and e["X"]["within_spread"]
    assert "inside the kernel spread ±1.20" in cell(e["X"])
    assert evidence(c, [t], spread=1.0)["X"]["verdict"] == "supports"
    f = tmp_path / "demo.json"
    f.write_text(json.dumps({"spread": 0.25}))
    assert kernel_spread(f) == 0.25 and kernel_spread(tmp_path / "absent.json") is None
    rows = verdict({"d": [table(4, [row("id-merged", [9, 9.1, 9.0]), row("id-hier", [10, 10.2, 10.1])])]}, {"d": 1.2})
    e = next(r for r in rows if r["compares"] == "id-hier vs id-merged")["evidence"]["d"]["X"]
    assert e["verdict"] == "inconclusive" and e["within_spread"]


def test_missing_rows_are_not_tested_and_best_baseline_is_chosen_per_domain():
    c = Claim("c", "hafvt", BEST_BASELINE, 2, None, "")
    t = table(2, [row("popularity", [5, 5], [9, 9], role="baseline", count_based=True), row("sasrec", [7, 7], [3, 3], role="baseline"),
                  row("hafvt", [6, 6], [4, 4])])
    e = evidence(c, [t])
    assert e["X"]["base"] == "sasrec" and e["X"]["verdict"] == "contradicts" and e["X"]["mean"] == -1  # below on every seed
    assert e["Y"]["base"] == "popularity"
    assert evidence(Claim("c", "id-img-merged", "id-merged", 4, None, ""), [t])["X"]["verdict"] == "not tested"


def test_a_model_that_learned_nothing_is_never_said_to_support_a_claim():
    """Negative control: a row equal to its base up to noise around zero never gets 'supports'."""
    rng = np.random.default_rng(0)
    c = Claim("c", "a", "b", 4, None, "")
    for _ in range(50):
        base = rng.normal(10, 1, 5)
        e = evidence(c, [table(4, [row("a", base + rng.normal(0, 0.01, 5) - 0.05), row("b", base)])])
        assert e["X"]["verdict"] != "supports"


def test_every_claim_has_a_row_per_dataset_and_quoted_gains(tmp_path):
    f = tmp_path / "table4.json"
    f.write_text(json.dumps(table(4, [row("id-merged", [1, 2]), row("id-img-merged", [2, 3])])))
    rows = verdict({"demo": [tmp_path], "none": []})
    assert [r["claim"] for r in rows] == [c.claim for c in CLAIMS]
    img = rows[0]
    assert img["evidence"]["demo"]["X"]["mean"] == 1 and img["evidence"]["none"]["X"]["verdict"] == "not tested"
    assert img["quoted_gain_x"] == pytest.approx(6.01 - 5.41, abs=0.5) and quoted_gain(CLAIMS[3]) is None
    assert verdict({"demo": load_tables([tmp_path]), "none": []}) == rows  # tables already loaded: the same verdict


def test_every_committed_results_folder_with_tables_is_a_data_set(tmp_path):
    """A scenario a reader commits under results/ joins the verdict; folders without tables do not."""
    for name, rows in (("mine", [row("id-merged", [1, 2, 3]), row("id-hier", [2, 3, 5])]), ("other", [row("id-merged", [1, 1])])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "table4.json").write_text(json.dumps(table(4, rows)))
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "bench.json").write_text("{}")
    found = committed_datasets(tmp_path)
    assert found == {"mine": [tmp_path / "mine"], "other": [tmp_path / "other"]}
    hier = next(r for r in verdict(found) if r["compares"].startswith("id-hier"))
    assert hier["evidence"]["mine"]["X"]["per_seed"] == [1, 1, 2] and hier["evidence"]["other"]["X"]["verdict"] == "not tested"
    assert committed_datasets(tmp_path / "absent") == {}


def test_training_protocol_says_which_grid_and_budget_each_data_set_used():
    def trained(name, lr, l2, rising=False):
        r = row(name, [1, 2], role="baseline")
        r["resolved_config"] = {"lr": lr, "l2": l2, "epochs": 20, "patience": 3}
        r["still_rising"] = {"X": int(rising), "Y": 0}
        return r

    fixed = table(2, [row("popularity", [1, 1], role="baseline", count_based=True), trained("id-merged", 1e-3, 1e-5)])
    assert training_protocol([fixed]) == ("every trained row at lr 0.001, L2 1e-05 (the papers' grid not searched); at most "
                                          "20 epochs, stopping 3 evaluations after the best; no row still rising at its last epoch")
    searched = table(4, [trained("id-merged", 5e-4, 1e-4), trained("id-hier", 1e-3, 1e-5, rising=True)])
    searched["grid"] = {"searched": "paper", "rows": {"id-merged": {"selected": {"lr": 5e-4, "l2": 1e-4}}}}
    text = training_protocol([searched])
    assert text.startswith("lr and L2 searched over the papers' grid for 1 row (seed 0, chosen on validation); "
                           "the other rows at lr 0.001, L2 1e-05")
    assert text.endswith("still rising at the last epoch: id-hier")
    assert training_protocol([table(2, [row("popularity", [1], role="baseline", count_based=True)])]) == "no trained row"


def test_the_pages_sentences_use_the_verdict_rule():
    """book.gain_finding words a comparison as the verdict page does: a mean gain larger than either row's
    spread over seeds is still 'inconclusive' when the paired 95% interval contains zero, and 'agrees'
    only when the interval lies above zero."""
    from hafvt.book import gain_finding

    t = table(2, [row("id-hier", [4.0, 6.0], [5.0, 5.2]), row("id-merged", [3.0, 3.1], [4.0, 4.1])])
    for r in t["rows"]:
        r["quoted"] = None
    text = gain_finding(t, "id-hier", "id-merged", "hier", "merged")
    x, y = text.split("Here, in domain ")[1:]
    e = evidence(Claim("c", "id-hier", "id-merged", 2, None, ""), [t])
    assert e["X"]["verdict"] == "inconclusive" and "**inconclusive**" in x and f"{e['X']['ci95'][0]:+.2f}" in x
    assert e["Y"]["verdict"] == "supports" and "**agrees with the paper's claim**" in y
    below = gain_finding(t, "id-merged", "id-hier", "merged", "hier", claim=False)
    assert "puts it **below** hier" in below and "**inconclusive**" in below


def test_where_it_loses_names_the_slice_that_makes_the_deficit():
    """The real-data page explains a row below popularity by the cold-item slice: which targets it loses on."""
    from hafvt.book import where_it_loses

    def buckets(rare, frequent):
        return {"sampled": {"X": {"1-4": {"mrr": rare}, "20+": {"mrr": frequent}}}}
    t = {"domains": {"X": "Food"}, "cold_items": {"n_lines": {"X": {"1-4": 1000, "20+": 100}},
                                                  "rows": {"c2dsr": buckets(2.0, 20.0), "popularity": buckets(1.0, 70.0)}}}
    text = where_it_loses(t, "c2dsr", "popularity", "X")
    assert "100% of the deficit comes from the 100 test lines whose target occurs 20+ times" in text
    assert "above popularity on targets occurring 1-4 times (2.00 against 1.00, 1,000 lines)" in text
    assert where_it_loses(t, "popularity", "c2dsr", "X").startswith("In Food, 100% of the deficit comes from the 1,000")
    assert where_it_loses(t, "c2dsr", "sasrec", "X") == ""  # a row the slice does not hold


def test_ranking_disagreements_name_the_pairs_that_sampled_and_full_ranking_order_oppositely():
    """The real-data and verdict pages say in words when the papers' sampled ranking and the full ranking
    disagree on a pair; a flip that either test cannot tell from noise, or no flip, is not reported."""
    from hafvt.book import ranking_disagreements

    def side(diff, p, a, b):
        return {"n": 2747, "mean_difference": diff, "mrr_a": a, "mrr_b": b, "wilcoxon": {"p": p}}

    def pair(name, sampled, full):
        return {"pair": name, "domain": "X", "row_a": "id-hier", "row_b": "transitions", "sampled": sampled, "full": full}

    t = {"pairs": [
        pair("flips", side(1.12, 5e-5, 10.35, 9.23), side(-0.31, 9e-6, 1.75, 2.06)),
        pair("flips, full not significant", side(1.12, 5e-5, 10.35, 9.23), side(-0.31, 0.2, 1.75, 2.06)),
        pair("same order", side(1.12, 5e-5, 10.35, 9.23), side(0.31, 9e-6, 2.06, 1.75))]}
    out = ranking_disagreements(t)
    assert len(out) == 1 and out[0].startswith("flips, domain X (2,747 test lines)")
    assert "sampled ranking puts id-hier above transitions (MRR with average-rank ties 10.35 against 9.23" in out[0]
    assert "the full ranking below it (1.75 against 2.06, p = 9e-06)" in out[0]
    assert ranking_disagreements({"pairs": []}) == [] and ranking_disagreements({}) == []


def test_each_claims_settling_commands_are_hafvt_command_lines_that_parse():
    """The verdict page prints these for a reader to paste: each must be a command the CLI accepts, and the
    rows it trains must include the claim's own row and base (the 'best' pseudo-rows come with a whole table)."""
    import shlex

    from hafvt.cli import build_parser

    parser = build_parser()
    for c in CLAIMS:
        trained = set()
        for cmd in c.settle.split("#")[0].split(" && "):
            argv = shlex.split(cmd)
            assert argv[0] == "hafvt", c.claim
            args = parser.parse_args(argv[1:])  # argparse exits on an unknown option
            if argv[1] == "reproduce":
                trained |= set(args.rows.split(",")) if args.rows else {"every row"}
        wanted = {r for r in (c.row, c.base) if not r.startswith(("best ",))}
        assert "every row" in trained or wanted <= trained, c.claim
