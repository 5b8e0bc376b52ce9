"""Static checks of the book's notebooks and pages (nbval executes them: `pytest --nbval-lax notebooks`)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
NAMES = ["01_dataset_statistics", "02_clip_embedding", "03_training", "04_main_results", "05_ablation", "06_attention",
         "07_real_data", "08_verdict"]
SOURCES = [REPO / "notebooks" / f"{n}.ipynb" for n in NAMES]


def parameters_cells(nb):
    return [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]


def parameter_names(nb) -> set[str]:
    src = nb.cells[parameters_cells(nb)[0]].source
    return {line.split("=", 1)[0].strip() for line in src.splitlines() if "=" in line and not line.lstrip().startswith("#")}


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_one_parameters_cell_then_derived(path):
    nb = nbformat.read(path, as_version=4)
    idx = parameters_cells(nb)
    assert len(idx) == 1, f"{path.name}: {len(idx)} cells tagged 'parameters'"
    nxt = nb.cells[idx[0] + 1]
    assert nxt.cell_type == "code" and "book.setup_page(" in nxt.source, "derived values belong in the next cell"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "source notebooks are committed unexecuted"
    assert {"scenario", "device", "epochs", "seeds", "smoke"} <= parameter_names(nb)


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_papermill_reads_every_parameter(path):
    from papermill.inspection import inspect_notebook

    nb = nbformat.read(path, as_version=4)
    assert set(inspect_notebook(str(path))) == parameter_names(nb), "papermill could not parse some parameter lines"


@pytest.mark.parametrize("target", ["demo", "fk-mini", "full"])
def test_parameter_files_name_only_known_parameters(target):
    params = yaml.safe_load((REPO / "notebooks" / "params" / f"{target}.yaml").read_text())
    for path in SOURCES:
        unknown = set(params) - parameter_names(nbformat.read(path, as_version=4))
        assert not unknown, f"{target}.yaml sets {unknown}, unknown to {path.name}"


def test_decisions_page_is_current():
    from hafvt.book import write_decisions

    assert write_decisions(REPO / "book" / "decisions.md", check=True), \
        "book/decisions.md is out of date with hafvt/config.py: run `python -m hafvt.book decisions book/decisions.md`"


def test_executed_pages_are_the_demo_and_carry_widget_state():
    """The committed pages of the book: executed by papermill with the demo parameters, without errors."""
    for name in NAMES:
        path = REPO / "book" / "notebooks" / f"{name}.ipynb"
        assert path.is_file(), f"{path} missing: run `make notebooks`"
        nb = nbformat.read(path, as_version=4)
        pm = nb.metadata.get("papermill", {})
        assert pm.get("parameters", {}).get("target") == "demo", f"{name}: not executed with notebooks/params/demo.yaml"
        assert not pm.get("parameters", {}).get("smoke"), f"{name}: executed in smoke mode"
        assert pm.get("exception") in (None, False), f"{name}: papermill recorded an exception"
        for c in nb.cells:
            for o in c.get("outputs", []):
                assert o.get("output_type") != "error", f"{name}: a cell raised {o.get('ename')}"
    state = nbformat.read(REPO / "book" / "notebooks" / "06_attention.ipynb", as_version=4).metadata["widgets"]
    models = state["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(m["model_name"] == "HTMLModel" and "hafvt-explorer" in m["state"].get("value", "") for m in models.values())


def test_demo_numbers_are_labelled():
    """Every executed page says which data its numbers come from: a banner, or (the verdict, which
    compares data sets) one sentence naming each data set's label."""
    for name in NAMES:
        text = (REPO / "book" / "notebooks" / f"{name}.ipynb").read_text()
        labelled = "hafvt-banner" in text or "Data sets (none is the papers' data)" in text
        assert labelled and "not comparable with the paper" in text, f"{name}: no data label"


# ------------------------------------------------------------------ the helpers the notebooks call


def test_side_by_side_keeps_quoted_and_ours_apart():
    from hafvt import viz

    df = viz.side_by_side({"hafvt": {"X": {"mrr": {"mean": 12.345, "std": 0.5}}}},
                          {"hafvt": {"X": {"mrr": 9.16}}, "MIFN [haf-vt]": {"X": {"mrr": 8.55}}},
                          domains=("X",), metrics=("mrr",), ours_label="ours [demo]", quoted_label="paper [quoted]")
    assert list(df.columns.get_level_values(2)) == ["paper [quoted]", "ours [demo]"]
    assert df.loc["hafvt"].tolist() == ["9.16", "12.35 ± 0.50"]
    assert df.loc["MIFN [haf-vt]"].tolist() == ["8.55", "—"]
    full = viz.side_by_side({"hafvt": {"X": {"mrr": {"mean": 1.0, "std": 0.0}}}}, None, domains=("X",), metrics=("mrr",))
    assert list(full.columns.get_level_values(2)) == ["ours"]


def test_decisions_page_lists_every_key():
    from hafvt.book import decisions_markdown
    from hafvt.config import decisions

    text = decisions_markdown()
    for d in decisions():
        assert f"| `{d['key']}` |" in text


def test_smoke_switch_reads_the_environment(monkeypatch):
    from hafvt.book import smoke_from_env

    monkeypatch.setenv("HAFVT_SMOKE", "1")
    assert smoke_from_env(False) is True
    monkeypatch.setenv("HAFVT_SMOKE", "0")
    assert smoke_from_env(True) is False
    monkeypatch.delenv("HAFVT_SMOKE")
    assert smoke_from_env(True) is True


def test_explorer_renders_a_user(tmp_path):
    """The widget's default view: history, attention per view and modality, top-10 lists, the true item marked."""
    from hafvt.config import load_config
    from hafvt.data.demo import write_demo
    from hafvt.train import run
    from hafvt.widgets import Explorer

    sys.path.insert(0, str(REPO / "tests"))
    from helpers import write_fixture_tables

    d = write_demo(tmp_path / "tiny", size="tiny", seed=0, images=True)
    from hafvt.data.c2dsr import read_scenario

    write_fixture_tables(d, read_scenario(d).n_items)
    cfg = load_config(REPO / "configs" / "hafvt.yaml", ["epochs=1", "q=16", "eval_every=1"])
    run(d, cfg, tmp_path / "run", seed=0, progress=False)
    ex = Explorer(d, tmp_path / "run", k=10)
    e = ex.explain([0, 1])[0]
    assert set(e.attention) == {(v, m) for v in ("x", "y", "xy") for m in ("id", "img", "tex")}
    assert all(len(w) == len(e.history) for w in e.attention.values())
    assert set(e.top) == {"id", "img", "tex", "fused"} and all(len(t) == 10 for t in e.top.values())
    target_dom = range(0, ex.scn.n_x) if e.domain == "X" else range(ex.scn.n_x, ex.scn.n_items)
    assert all(i in target_dom for t in e.top.values() for i, _ in t)
    html = ex.render(e)
    assert "true next item" in html and "data:image/png;base64," in html and "not comparable with the papers" in html
    w = ex.widget(lines=[0, 1, 2])
    assert "hafvt-explorer" in w.children[1].value


@pytest.mark.parametrize("path", SOURCES, ids=NAMES)
def test_every_page_declares_the_shared_parameters(path):
    """One parameters file per target serves every page, so every page declares the same parameters."""
    from hafvt.book import PARAMETERS

    assert parameter_names(nbformat.read(path, as_version=4)) == set(PARAMETERS)
