"""Provenance that cannot lie: source hashes, a dirty flag over sources only, portable paths, and
``hafvt provenance check`` on the committed results."""
import json
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import yaml

from hafvt import provenance
from hafvt.cli import main as cli
from hafvt.config import load_config
from hafvt.data.c2dsr import data_hash
from hafvt.provenance import ABSOLUTE, check, git_commit, portable, source_hash
from hafvt.train import run
from helpers import REPO, clone_repo, tiny_demo


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _edited_record() -> dict:
    """A record whose sources the test edits: made from an uncommitted tree (dirty), as such a record would be,
    without the list of modules its process loaded (which depends on what this test process has imported so
    far): every Python source counts for it, as for records made before that list existed."""
    rec = {**provenance.record(), "dirty": True}
    del rec["loaded"]
    return rec


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A clone of the committed repository (what CI and a new user get)."""
    return clone_repo(tmp_path_factory.mktemp("clone") / "hafvt")


def test_committed_results_are_made_by_the_committed_sources(clone):
    """What `make test` checks on the working tree, here on the clean clone: every committed results
    file (tables, their runs, executed notebooks) was made by HEAD's sources and holds no absolute path."""
    problems = check(root=clone)
    assert problems == [], "\n".join(f"{p['file']}: {p['problem']}" for p in problems)


def test_one_character_change_to_the_model_makes_the_book_stale(clone, tmp_path):
    """A changed constant stales every result it counts for (a certified one too: its certificate names the
    sources before the change, and the problem names the file changed since)."""
    work = tmp_path / "w"
    shutil.copytree(clone, work, ignore=shutil.ignore_patterns(".git"))
    model = work / "hafvt" / "models" / "hafvt.py"
    text = model.read_text()
    assert text.count("std=0.02") == 1
    model.write_text(text.replace("std=0.02", "std=0.03"))
    problems = check(root=work)
    stale = {p["file"] for p in problems if p["problem"].startswith("stale")}
    assert {f"book/notebooks/{n}" for n in ("03_training.ipynb", "04_main_results.ipynb")} <= stale
    assert "book/_static/results/demo/table2.json" in stale
    assert all(p["changed"] == ["hafvt/models/hafvt.py"] for p in problems if p["problem"].startswith("stale"))


def test_cli_check_exit_codes_and_names_the_file(clone, tmp_path, capsys):
    res = tmp_path / "r.json"
    res.write_text(json.dumps({"provenance": provenance.record()}))
    assert cli(["provenance", "check", str(res)]) == 0
    rec = _edited_record()
    rec["sources"]["hafvt/models/hafvt.py"] = "0" * 16
    rec["source_hash"] = provenance.manifest_hash(rec["sources"])
    res.write_text(json.dumps({"provenance": rec}))
    capsys.readouterr()
    assert cli(["provenance", "check", str(res)]) == 1
    out = capsys.readouterr().out
    assert "stale" in out and "hafvt/models/hafvt.py" in out
    res.write_text(json.dumps({"metrics": {}}))
    assert cli(["provenance", "check", str(res)]) == 1
    assert "no provenance record" in capsys.readouterr().out


def test_dirty_only_for_source_files(clone):
    assert git_commit(clone) == {"commit": _git(clone, "rev-parse", "HEAD").strip(), "dirty": False}
    for f in ("book/notebooks/03_training.ipynb", "README.md"):  # executed notebooks, prose: not sources
        (clone / f).write_text((clone / f).read_text() + " ")
    (clone / "results" / "new.json").write_text("{}")
    assert git_commit(clone)["dirty"] is False
    cfg = clone / "configs" / "hafvt.yaml"
    cfg.write_text(cfg.read_text() + "\n# changed\n")
    assert git_commit(clone)["dirty"] is True
    _git(clone, "checkout", "--", "configs/hafvt.yaml")
    (clone / "hafvt" / "new_module.py").write_text("x = 1\n")  # an untracked source file counts
    assert git_commit(clone)["dirty"] is True
    (clone / "hafvt" / "new_module.py").unlink()


def test_notebook_hash_ignores_outputs_and_metadata(tmp_path):
    nb = json.loads((REPO / "notebooks" / "03_training.ipynb").read_text())
    a = tmp_path / "a.ipynb"
    a.write_text(json.dumps(nb))
    before = provenance.file_digest(a)
    nb["metadata"]["widgets"] = {"x": 1}
    nb["cells"][1]["execution_count"] = 7
    a.write_text(json.dumps(nb, indent=2))
    assert provenance.file_digest(a) == before
    nb["cells"][1]["source"] = nb["cells"][1]["source"] + ["\n# edited"] if isinstance(nb["cells"][1]["source"], list) \
        else nb["cells"][1]["source"] + "\n# edited"
    a.write_text(json.dumps(nb))
    assert provenance.file_digest(a) != before


def test_a_clean_record_must_hold_its_commits_sources(tmp_path):
    """A results file made on a copy of the tree whose git HEAD was another commit recorded that commit,
    not dirty: the check compares the recorded sources with the commit's own, read from git."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    head = _git(REPO, "rev-parse", "HEAD").strip()
    rec = {**provenance.record(), "commit": head, "dirty": False}
    rec["sources"] = provenance.manifest_at(head)
    rec["source_hash"] = provenance.manifest_hash(rec["sources"])
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"provenance": {**rec, "kind": "benchmark"}}))  # a benchmark may be old, not mislabelled
    assert check([f]) == []
    rec["sources"] = {**rec["sources"], "hafvt/models/hafvt.py": "0" * 16}
    rec["source_hash"] = provenance.manifest_hash(rec["sources"])
    f.write_text(json.dumps({"provenance": {**rec, "kind": "benchmark"}}))
    [p] = check([f])
    assert p["problem"].startswith(f"records commit {head[:10]} (not dirty)") and p["changed"] == ["hafvt/models/hafvt.py"]
    for ok in ({"dirty": True}, {"commit": "0" * 40}):  # declared dirty; a commit this clone lacks cannot be checked
        f.write_text(json.dumps({"provenance": {**rec, "kind": "benchmark", **ok}}))
        assert check([f]) == []


def test_copy_without_git_uses_the_commit_it_is_told(monkeypatch):
    monkeypatch.setenv("HAFVT_GIT_COMMIT", "abc123")
    monkeypatch.setenv("HAFVT_SOURCE_HASH", source_hash())
    assert git_commit() == {"commit": "abc123", "dirty": False}
    monkeypatch.setenv("HAFVT_SOURCE_HASH", "0" * 16)
    assert git_commit()["dirty"] is True


def test_portable_paths(tmp_path):
    assert portable(REPO / "build" / "demo") == "build/demo"
    assert portable(REPO) == "."
    assert portable(tmp_path / "x").startswith("$TMPDIR/") or not str(tmp_path).startswith("/tmp")
    assert not portable(REPO.parent / "shared" / "data").startswith("/")


def test_command_names_output_folders_by_their_variable(tmp_path, monkeypatch):
    """An output path that does not exist yet, in a folder named by $OUT (a device machine's) or $HOME."""
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "elsewhere"))
    assert portable(tmp_path / "out" / "bench.json") == "$OUT/bench.json"
    assert portable(tmp_path / "home" / "r" / "t.json") == "$HOME/r/t.json"
    monkeypatch.setattr("sys.argv", ["scripts/bench_gpu.py", "--out", str(tmp_path / "out" / "bench.json")])
    provenance.set_invocation(None)
    cmd = provenance.invocation()["command"]
    assert cmd == "python scripts/bench_gpu.py --out $OUT/bench.json" and not ABSOLUTE.search(cmd)


def test_run_records_sources_data_candidates_and_no_absolute_path(tmp_path, monkeypatch):
    d = tiny_demo(tmp_path)
    monkeypatch.setattr("sys.argv", [str(REPO / ".venv" / "bin" / "hafvt"), "train", str(d), "--out", str(tmp_path / "r")])
    cfg = load_config(REPO / "configs" / "hafvt.yaml", ["epochs=1", "q=16", "n_neg=19"])
    res = run(d, cfg, tmp_path / "r", progress=False)
    p = res["provenance"]
    assert p["source_hash"] == source_hash() and p["sources"]["hafvt/models/hafvt.py"]
    assert p["config"] == cfg.to_dict() and p["command"].startswith("hafvt train ")
    assert p["candidates"] == ["candidates/valid-neg19-seed0.npy", "candidates/test-neg19-seed0.npy"]
    assert p["data_hash"] == data_hash(d, [d / c for c in p["candidates"]]) != data_hash(d)
    assert p["embeddings"]["manifest_hash"] and p["embeddings"]["model"] == "test-fixture"
    text = (tmp_path / "r" / "results.json").read_text()
    assert not ABSOLUTE.search(text) and str(tmp_path) not in text and str(REPO) not in text
    # the candidates are part of the data: another draw is another data hash
    np.save(d / p["candidates"][1], np.load(d / p["candidates"][1])[:, ::-1].copy())
    assert data_hash(d, [d / c for c in p["candidates"]]) != p["data_hash"]


def test_derived_scenario_records_its_source(tmp_path):
    d = tiny_demo(tmp_path)
    out = tmp_path / "derived"
    assert cli(["derive", str(d), str(out), "--train-fraction", "0.8", "--seed", "3"]) == 0
    info = json.loads((out / "derived.json").read_text())
    assert info["source_hash"] == data_hash(d) and info["train_fraction"] == 0.8 and info["seed"] == 3
    assert not info["source"].startswith("/")


def test_reproduce_records_its_parameters_file(tmp_path):
    d = tiny_demo(tmp_path)
    params = tmp_path / "p.yaml"
    params.write_text(yaml.safe_dump({"target": "t", "device": "cpu", "epochs": 1, "seeds": 1, "overrides": {"hidden": 8, "n_neg": 19},
                                      "rows_table2": ["popularity", "gru4rec"], "rows_table4": []}))
    out = tmp_path / "t2"
    provenance.set_invocation(None)
    try:
        assert cli(["reproduce", str(d), "--table", "2", "--params", str(params), "--quiet", "--out", str(out)]) == 0
    finally:
        provenance.set_invocation(None)
    t = json.loads((out / "table2.json").read_text())
    assert [r["row"] for r in t["rows"]] == ["popularity", "gru4rec"]
    assert t["provenance"]["parameters"] == yaml.safe_load(params.read_text())
    assert t["rows"][1]["resolved_config"]["hidden"] == 8 and t["rows"][1]["resolved_config"]["epochs"] == 1
    assert "Regenerate: `" in (out / "table2.md").read_text()
    assert check([out]) == []  # made by the current sources, md/tex equal to what the json renders to


def test_committed_results_record_their_parameters_file_and_their_links_resolve():
    """Every committed table and executed notebook names the command that regenerates it; the parameters
    it recorded are that command's parameters file, as committed; every link to a run resolves."""
    import re

    demo = yaml.safe_load((REPO / "notebooks" / "params" / "demo.yaml").read_text())
    notebooks = sorted((REPO / "book" / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 8
    for nb in notebooks:
        (rec,) = provenance.records_in(nb)
        assert rec["command"] == "make notebooks TARGET=demo" and rec["parameters"] == demo, nb.name
        assert rec["dirty"] is False, f"{nb.name} was executed with uncommitted source changes"
    tables = sorted((REPO / "book" / "_static" / "results").rglob("table*.json")) + sorted((REPO / "results").rglob("table*.json"))
    assert len(tables) >= 4
    for f in tables:
        p = json.loads(f.read_text())["provenance"]
        params = yaml.safe_load((REPO / p["parameters_file"]).read_text())
        assert p["parameters"] == params, f"{f}: recorded parameters differ from {p['parameters_file']}"
        md = f.with_suffix(".md").read_text()
        links = re.findall(r"\]\(([^)]+)\)", md)
        assert links and all((f.parent / link).is_file() for link in links), f"{f.with_suffix('.md')}: dead link"


def test_a_cli_table_does_not_depend_on_notebook_sources(tmp_path):
    rec = _edited_record()
    rec["command"] = "hafvt reproduce build/fk-mini --table 2"
    nb = next(f for f in rec["sources"] if f.endswith(".ipynb"))
    rec["sources"][nb] = "0" * 16
    rec["source_hash"] = provenance.manifest_hash(rec["sources"])
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"provenance": rec}))
    assert check([f]) == []
    rec["notebook"] = "notebooks/04_main_results.ipynb"  # made inside a notebook: its source matters
    f.write_text(json.dumps({"provenance": rec}))
    assert [p["changed"] for p in check([f])] == [[nb]]


def test_embedding_code_counts_only_for_results_that_read_embeddings(tmp_path):
    rec = _edited_record()
    rec["command"] = "hafvt reproduce build/fk-mini --table 2"
    rec["sources"]["hafvt/embed/clip.py"] = "0" * 16
    rec["sources"]["hafvt/verdict.py"] = "0" * 16  # shows results, computes none of their numbers
    rec["source_hash"] = provenance.manifest_hash(rec["sources"])
    cfg = load_config(REPO / "configs" / "id-merged.yaml").to_dict()
    f = tmp_path / "table2.json"
    f.write_text(json.dumps({"provenance": rec, "rows": [{"row": "id-merged", "seeds_done": 3, "resolved_config": cfg}]}))
    assert check([f]) == []
    fusion = load_config(REPO / "configs" / "ifcdsr.yaml").to_dict()
    f.write_text(json.dumps({"provenance": rec, "rows": [{"row": "ifcdsr", "seeds_done": 3, "resolved_config": fusion}]}))
    assert [p["changed"] for p in check([f])] == [["hafvt/embed/clip.py"]]
    rec["sources"]["hafvt/models/hafvt.py"] = "0" * 16  # the model always counts
    rec["source_hash"] = provenance.manifest_hash(rec["sources"])  # as a real record's would be
    f.write_text(json.dumps({"provenance": rec, "rows": [{"row": "id-merged", "seeds_done": 3, "resolved_config": cfg}]}))
    assert [p["changed"] for p in check([f])] == [["hafvt/models/hafvt.py"]]


def test_a_cli_table_depends_on_its_own_parameters_file_only(tmp_path):
    """Retuning the demo's parameters leaves the real-data table current; editing its own file stales it."""
    rec = _edited_record()
    rec.update(command="hafvt reproduce build/fk-mini --table 2", parameters_file="notebooks/params/fk-mini.yaml")
    rec["sources"]["notebooks/params/demo.yaml"] = "0" * 16
    rec["source_hash"] = provenance.manifest_hash(rec["sources"])
    f = tmp_path / "table2.json"
    f.write_text(json.dumps({"provenance": rec}))
    assert check([f]) == []
    rec["sources"]["notebooks/params/fk-mini.yaml"] = "0" * 16
    rec["source_hash"] = provenance.manifest_hash(rec["sources"])
    f.write_text(json.dumps({"provenance": rec}))
    assert [p["changed"] for p in check([f])] == [["notebooks/params/fk-mini.yaml"]]
    del rec["parameters_file"]  # a plain `hafvt train`: no parameters file counts
    f.write_text(json.dumps({"provenance": rec}))
    assert check([f]) == []


def test_records_name_the_cpu_kernels_and_threads(monkeypatch):
    """What decides a CPU run's float32 rounding is in every record: model, flags, ATen capability, threads, env."""
    import torch

    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    cpu = provenance.record()["cpu"]
    assert cpu["model"] and cpu["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["threads"] == torch.get_num_threads() and cpu["env"]["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert set(cpu["flags"]) <= set(provenance.CPU_FLAGS)
    assert provenance.record()["digest"] == provenance.DIGEST == "ast-1"


def test_records_of_the_byte_scheme_are_compared_as_bytes(tmp_path):
    """A record made before the ast-1 digests (no "digest" field) is checked against byte digests: a
    comment added since stales it, as it did then; the same record in ast-1 stays fresh."""
    work = tmp_path / "w"
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".git", ".venv", "build", "results", "book", "*.egg-info"))
    rec = {**provenance.record(), "dirty": True}
    old = {**rec, "sources": provenance.source_manifest(work, "bytes")}
    old["source_hash"] = provenance.manifest_hash(old["sources"])
    del old["digest"], old["loaded"]  # as such a record was made: neither field existed
    new = {**rec, "sources": provenance.source_manifest(work), "source_hash": provenance.source_hash(work)}
    for name, r in (("old", old), ("new", new)):
        (work / f"{name}.json").write_text(json.dumps({"provenance": r, "config": {}}))
    assert check([work / "old.json", work / "new.json"], root=work) == []
    f = work / "hafvt" / "train.py"
    f.write_text(f.read_text() + "\n# a comment\n")
    problems = check([work / "old.json", work / "new.json"], root=work)
    assert [(p["file"], p["changed"]) for p in problems] == [("old.json", ["hafvt/train.py"])]
