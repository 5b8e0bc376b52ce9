"""``hafvt reproduce``: table files, mean ± std over seeds, quoted columns, resume, paired test, cold slice."""
import json

import numpy as np
import numpy as np
import pytest
import torch

import hafvt.train as train_mod
from hafvt.cli import main as cli
from hafvt.reproduce import TABLE_ROWS, load_table, paired_test, paper_numbers, reproduce_table, run_dir, to_markdown
from helpers import tiny_demo

ROWS = "popularity,transitions,sasrec"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tiny_demo(tmp_path_factory.mktemp("demo"))
    out = tmp_path_factory.mktemp("repro") / "t2"
    rc = cli(["reproduce", str(d), "--table", "2", "--seeds", "2", "--epochs", "1", "--rows", ROWS,
              "--set", "hidden=16", "--set", "n_neg=99", "--quiet", "--out", str(out)])
    torch.set_num_threads(before)
    assert rc == 0
    return d, out


def test_table_files_and_mean_std(table):
    d, out = table
    for ext in ("json", "md", "tex"):
        assert (out / f"table2.{ext}").is_file()
    t = load_table(out, 2)
    assert [r["row"] for r in t["rows"]] == ROWS.split(",")
    assert t["data_kind"] == "demo" and not t["comparable_with_paper"]
    for r in t["rows"]:
        assert r["seeds"] == [0, 1] and len(r["runs"]) == 2 and (out / r["runs"][0]).is_file()
        for kind in ("sampled", "full"):
            s = r["metrics"][kind]["X"]["mrr"]
            vals = [json.loads((out / p).read_text())["metrics"][kind]["X"]["mrr"] * 100 for p in r["runs"]]
            assert s["values"] == pytest.approx(vals) and s["mean"] == pytest.approx(sum(vals) / 2)
            assert s["std"] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
        assert "metrics_average_ties" in r
    md = (out / "table2.md").read_text()
    assert "± " in md and "not comparable" in md and "average-rank ties" in md and "[paper, quoted]" in md
    assert "quoted" in (out / "table2.tex").read_text()


def test_quoted_numbers_are_marked_and_complete(table):
    t = load_table(table[1], 2)
    assert all(q["quoted"] for q in t["quoted"])
    sas = next(r for r in t["rows"] if r["row"] == "sasrec")
    assert sas["quoted"]["quoted"] and sas["quoted"]["X"]["mrr"] == 7.30
    n = {k: len(paper_numbers(k)) for k in (2, 3, 4)}
    assert n == {2: 72, 3: 84, 4: 9}  # 6 rows x 6 per paper; 7 x 6; HAF-VT 6 + IFCDSR 3 ablation rows
    assert sorted(r["value"] for r in paper_numbers(4) if r["paper"] == "ifcdsr") == [5.03, 5.63, 6.08]
    assert len(TABLE_ROWS[4]) == 8 and "id-hier" in TABLE_ROWS[4]  # the paper's 7 rows + ID-only hierarchical attention


def _mean_mrr(out, row, seeds, d):
    """Sampled MRR x100 (average ties) of a row's test lines of domain d, from its test_ranks.npz files."""
    zs = [np.load(run_dir(out, row, s) / "test_ranks.npz") for s in seeds]
    dom = zs[0]["domain"] == (0 if d == "X" else 1)
    return 100 * float(np.mean([1 / z["sampled_average"][dom] for z in zs], axis=0).mean())


def test_paired_test_and_cold_slice(table):
    out = table[1]
    t = load_table(out, 2)
    pt = t["paired_test"]
    assert "Wilcoxon" in pt["tests"] and "t-test" in pt["tests"]
    # every row of this table is a baseline: the test says so and never claims a proposed row
    assert pt["proposed_finished"] is False and "no proposed row finished" in pt["comparison"]
    md = (out / "table2.md").read_text()
    assert "## Paired test: best baseline vs next-best baseline (no proposed row finished)" in md
    assert "proposed" not in md.split("## Paired test")[1].split("## Cold")[0].replace("no proposed row", "")
    seeds = t["rows"][0]["seeds"]
    for d in ("X", "Y"):
        e = pt["domains"][d]
        mrr = {r["row"]: _mean_mrr(out, r["row"], seeds, d) for r in t["rows"]}
        order = sorted(mrr, key=mrr.get, reverse=True)
        assert [e["row_a"], e["row_b_best_baseline"]] == order[:2] and e["comparison"] == pt["comparison"]
        assert e["sampled"]["mrr_a"] == pytest.approx(mrr[e["row_a"]]) and e["sampled"]["mrr_b"] == pytest.approx(mrr[e["row_b_best_baseline"]])
        for kind in ("sampled", "full"):
            p = e[kind]["t_test"]["p"]
            assert 0 <= p <= 1, (d, kind, p)  # a NaN fails
    # with a proposed row (sasrec declared proposed), row A is it, whatever its MRR, and the label says so
    pt2 = paired_test(out, t["rows"], {"sasrec"})
    assert pt2["proposed_finished"] is True and pt2["comparison"] == "best proposed row vs best baseline"
    for d in ("X", "Y"):
        e = pt2["domains"][d]
        others = {r["row"]: _mean_mrr(out, r["row"], seeds, d) for r in t["rows"] if r["row"] != "sasrec"}
        assert e["row_a"] == "sasrec" and e["row_b_best_baseline"] == max(others, key=others.get)
    md2 = to_markdown({**t, "paired_test": pt2})
    assert "## Paired test: best proposed row vs best baseline" in md2 and "row A (best proposed)" in md2
    c = t["cold_items"]
    assert set(c["rows"]) == set(ROWS.split(","))
    assert set(c["rows"]["sasrec"]["sampled"]["X"]) == {"0", "1-4", "5-19", "20+"}
    from hafvt.data.c2dsr import read_scenario

    n_test = len(read_scenario(table[0]).test)
    assert sum(c["n_lines"]["X"].values()) + sum(c["n_lines"]["Y"].values()) == n_test

def test_resume_skips_finished_runs(table, monkeypatch):
    d, out = table
    calls = []
    monkeypatch.setattr(train_mod, "run", lambda *a, **k: calls.append(a))
    t = reproduce_table(d, 2, 2, out, epochs=1, overrides=["hidden=16", "n_neg=99"], rows=ROWS.split(","), progress=False)
    assert calls == [] and all(r["seeds_done"] == 2 for r in t["rows"])
    # a third seed runs only the missing runs
    monkeypatch.undo()
    t = reproduce_table(d, 2, 3, out, epochs=1, overrides=["hidden=16", "n_neg=99"], rows=["popularity"], progress=False)
    assert t["rows"][0]["seeds"] == [0, 1, 2]


def test_grid_search_selects_on_validation_and_reuses_the_run(tmp_path, monkeypatch):
    import hafvt.reproduce as rep

    monkeypatch.setattr(rep, "PAPER_GRID", {"lr": [1e-2, 1e-4], "l2": [1e-5]})
    d = tiny_demo(tmp_path)
    calls = []
    real = train_mod.run
    monkeypatch.setattr(train_mod, "run", lambda *a, **k: calls.append(k.get("seed")) or real(*a, **k))
    t = rep.reproduce_table(d, 4, 2, tmp_path / "t", epochs=1, rows=["popularity", "id-merged"], grid="paper",
                            overrides=["q=16", "n_neg=19"], progress=False)
    g = t["grid"]["rows"]["id-merged"]
    assert set(g["points"]) == {"lr=0.01 l2=1e-05", "lr=0.0001 l2=1e-05"} and "popularity" not in t["grid"]["rows"]
    best = max(g["points"], key=g["points"].get)
    assert best == f"lr={g['selected']['lr']:g} l2={g['selected']['l2']:g}"
    seed0 = json.loads((tmp_path / "t" / "runs" / "id-merged" / "seed0" / "results.json").read_text())
    assert seed0["config"]["lr"] == g["selected"]["lr"]
    row = next(r for r in t["rows"] if r["row"] == "id-merged")
    assert row["resolved_config"]["lr"] == g["selected"]["lr"] and row["seeds_done"] == 2
    assert calls.count(0) == 3  # 2 grid points + popularity
    assert calls.count(1) == 2  # popularity and id-merged seed 1; id-merged seed 0 is the grid run, not retrained
    assert "Grid: paper" in (tmp_path / "t" / "table4.md").read_text()


def test_worker_processes_give_the_same_numbers(tmp_path):
    d = tiny_demo(tmp_path)
    kw = dict(epochs=1, rows=["sasrec"], overrides=["hidden=16", "n_neg=19"], progress=False)
    a = reproduce_table(d, 2, 2, tmp_path / "a", **kw)
    b = reproduce_table(d, 2, 2, tmp_path / "b", workers=2, **kw)
    ra, rb = a["rows"][0], b["rows"][0]
    assert ra["metrics"]["sampled"]["X"]["mrr"]["values"] == rb["metrics"]["sampled"]["X"]["mrr"]["values"]
    assert ra["metrics"]["full"]["Y"]["mrr"]["values"] == rb["metrics"]["full"]["Y"]["mrr"]["values"]


def test_sensitivity_varies_one_key_and_chooses_on_validation(tmp_path):
    d = tiny_demo(tmp_path)
    out = tmp_path / "s"
    rc = cli(["sensitivity", str(d), "--row", "id-merged", "--vary", "temperature=0.1,0.5", "--vary", "dropout=0.1",
              "--seeds", "2", "--epochs", "1", "--set", "q=16", "--set", "n_neg=19", "--quiet", "--out", str(out)])
    assert rc == 0
    s = json.loads((out / "sensitivity.json").read_text())
    # 0.1 is the default temperature: not trained twice
    assert [(v["key"], v["value"]) for v in s["variants"]] == [("default", None), ("temperature", 0.5), ("dropout", 0.1)]
    assert len(s["runs"]) == 6 and all(v["seeds"] == 2 for v in s["variants"])
    best = max(s["variants"], key=lambda v: v["valid_mean"])
    assert s["chosen_by_validation"] == {"key": best["key"], "value": best["value"]}
    r = json.loads((out / "runs" / "id-merged" / "temperature=0.5" / "seed1" / "results.json").read_text())
    assert r["config"]["temperature"] == 0.5 and r["provenance"]["seed"] == 1
    v = next(v for v in s["variants"] if v["key"] == "temperature")
    assert v["test_X"] == pytest.approx(np.mean([x["test_X"] for x in s["runs"] if x["key"] == "temperature"]))


def test_named_pairs_compare_the_best_trained_row_with_transitions(table):
    d, out = table
    t = reproduce_table(d, 2, 2, out, epochs=1, overrides=["hidden=16", "n_neg=99"], rows=ROWS.split(","), progress=False)
    pairs = [p for p in t["pairs"] if p["pair"] == "best trained row vs transitions"]
    assert [p["domain"] for p in pairs] == ["X", "Y"] and all(p["row_a"] == "sasrec" for p in pairs)
    x = pairs[0]["sampled"]
    sas = next(r for r in t["rows"] if r["row"] == "sasrec")
    assert x["n"] > 0 and np.isfinite(x["t_test"]["p"])
    assert x["mrr_a"] == pytest.approx(sas["metrics_average_ties"]["sampled"]["X"]["mrr"]["mean"], abs=1e-6)
    assert "## Paired tests of named questions" in (out / "table2.md").read_text()
