"""Provenance that survives refactoring: digests that ignore what cannot change a number, and
certificates that a changed source computes what the recorded one did (``hafvt provenance certify``).

Each test works on a clone holding the current sources as a commit, with one result (a one-epoch
SASRec run on the tiny demo) made there by that commit's code in a subprocess."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from hafvt import provenance
from hafvt.certify import certify, changed_statements, error_only_statements
from hafvt.provenance import check, normalised_python
from helpers import REPO, clone_repo, git

RESULT = "results/probe-test/run/results.json"
MAKE_RESULT = (
    "import sys\n"
    "from hafvt.data.demo import write_demo\n"
    "from hafvt.config import load_config\n"
    "from hafvt.train import run\n"
    "d = write_demo('build/tiny', size='tiny', seed=0, images=False)\n"
    "cfg = load_config('configs/sasrec.yaml', overrides={'epochs': 1, 'q': 16, 'n_blocks': 1}).validate()\n"
    "run(d, cfg, 'results/probe-test/run', progress=False)\n"
)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A repository whose HEAD holds the current sources and a result made by them (committed)."""
    base = clone_repo(tmp_path_factory.mktemp("certify") / "repo")
    for rel in provenance.source_files(REPO):  # the working tree's sources, committed in the clone
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, base / rel)
    for rel in set(provenance.source_files(base)) - set(provenance.source_files(REPO)):
        (base / rel).unlink()
    git(base, "add", "-A", "hafvt", "configs", "notebooks", "scripts", "pyproject.toml")
    git(base, "commit", "-q", "--allow-empty", "-m", "sources")
    env = {**os.environ, "PYTHONPATH": str(base), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", MAKE_RESULT], cwd=base, env=env, check=True, capture_output=True)
    assert check([base / RESULT], root=base) == []
    return base


@pytest.fixture
def repo(made, tmp_path):
    """A fresh copy of ``made`` for one test to edit."""
    dest = tmp_path / "repo"
    shutil.copytree(made, dest, symlinks=True)
    return dest


def _stale(repo) -> list[dict]:
    return [p for p in check([repo / RESULT], root=repo) if p["problem"].startswith("stale")]


def _edit(repo, rel, old, new, count=1):
    p = repo / rel
    text = p.read_text()
    assert text.count(old) == count, (rel, old)
    p.write_text(text.replace(old, new))


def test_docstrings_comments_and_formatting_change_no_digest(repo):
    _edit(repo, "hafvt/train.py", '"""One pass over the shuffled training lines', '"""One pass (edited) over the shuffled training lines')
    _edit(repo, "hafvt/train.py", "    model.train()\n    if pad_last is None:", "    model.train()  # a new comment\n\n    if pad_last is None:")
    _edit(repo, "hafvt/train.py", "    perm = rng.permutation(len(views))", "    perm = rng.permutation(\n        len(views)\n    )")
    assert _stale(repo) == []
    _edit(repo, "hafvt/train.py", "    perm = rng.permutation(\n        len(views)\n    )", "    perm = rng.permutation(len(views) + 0)")
    assert [p["changed"] for p in _stale(repo)] == [["hafvt/train.py"]]


def test_normalised_python_keeps_code_and_drops_docstrings():
    a = 'def f(x):\n    """Doc."""\n    return x + 1  # c\n'
    assert normalised_python(a) == normalised_python("def f(x):\n    return (x +\n            1)\n")
    assert normalised_python(a) != normalised_python("def f(x):\n    return x + 2\n")
    assert normalised_python('def f():\n    """Only a docstring."""\n') == normalised_python("def f():\n    pass\n")


def test_changed_statements_are_the_touched_statements_of_the_new_file():
    old = "def f(x):\n    y = x\n    return y\n\n\ndef g():\n    return 1\n"
    new = "def f(x):\n    y = x + (\n        1)\n    return y\n\n\ndef g():\n    return 1\n"
    assert changed_statements(old, new) == {2}  # the continuation line belongs to the statement on line 2
    assert changed_statements(old, old.replace("    return 1\n", "    return 1  # note\n")) == set()
    assert changed_statements(None, "x = 1\n\ny = 2\n") == {1, 3}


def test_an_unloaded_file_and_a_notebook_source_do_not_stale_a_cli_run(repo):
    """A record lists the Python sources its process imported (``loaded``); code changes elsewhere, in the
    scripts or in the modules that only show results do not stale it; a change to a loaded module does."""
    loaded = json.loads((repo / RESULT).read_text())["provenance"]["loaded"]
    assert "hafvt/train.py" in loaded and "hafvt/models/baselines/sasrec.py" in loaded
    assert "hafvt/data/amazon.py" not in loaded and "hafvt/reproduce.py" not in loaded
    (repo / "scripts" / "bench_train.py").write_text((repo / "scripts" / "bench_train.py").read_text() + "\nX = 1\n")
    for rel in ("hafvt/viz.py", "hafvt/data/amazon.py", "hafvt/reproduce.py"):
        _edit(repo, rel, "from __future__ import annotations\n", "from __future__ import annotations\nX = 1\n")
    assert _stale(repo) == []
    _edit(repo, "hafvt/models/baselines/sasrec.py", "from __future__ import annotations\n", "from __future__ import annotations\nX = 1\n")
    assert [p["changed"] for p in _stale(repo)] == [["hafvt/models/baselines/sasrec.py"]]


@pytest.mark.slow
def test_a_pure_rename_is_certified_and_check_accepts_it(repo):
    _edit(repo, "hafvt/train.py", "_seed_epoch(", "_epoch_rng(", count=2)
    assert _stale(repo), "a rename changes the AST: stale until certified"
    [rep] = certify([repo / RESULT], root=repo, progress=False)
    assert "certificate" in rep, rep
    cert = json.loads((repo / rep["certificate"]).read_text())
    assert cert["changed"]["hafvt/train.py"]["covered"] and cert["probe"]["old"] == cert["probe"]["new"]
    assert check([repo / RESULT, repo / "results" / "certificates"], root=repo) == []
    # a later edit of a counted file is not covered by that certificate
    _edit(repo, "hafvt/train.py", "    perm = rng.permutation(len(views))", "    perm = rng.permutation(len(views) + 0)")
    [p] = _stale(repo)
    assert "changed since" in p["problem"]


@pytest.mark.slow
def test_a_forged_certificate_is_rejected(repo):
    _edit(repo, "hafvt/train.py", "_seed_epoch(", "_epoch_rng(", count=2)
    [rep] = certify([repo / RESULT], root=repo, progress=False)
    f = repo / rep["certificate"]
    good = json.loads(f.read_text())
    for forge in ("manifest", "probe"):
        cert = json.loads(json.dumps(good))
        if forge == "manifest":
            cert["new"]["sources"]["hafvt/train.py"] = "0" * 16
        else:
            cert["probe"]["new"] = {k: "0" * 16 for k in cert["probe"]["new"]}
        f.write_text(json.dumps(cert))
        problems = check([repo / RESULT, f], root=repo)
        assert any("certificate rejected: its digest does not match" in p["problem"] for p in problems), problems
        assert any(p["problem"].startswith("stale") for p in problems)


@pytest.mark.slow
def test_a_changed_constant_is_refused_because_the_probe_differs(repo):
    _edit(repo, "hafvt/models/baselines/base.py", "std=0.02", "std=0.03")
    before = sorted((repo / "results").glob("certificates/*.json"))  # the committed results' certificates
    [rep] = certify([repo / RESULT], root=repo, progress=False)
    assert "probe outputs differ" in rep.get("refused", ""), rep
    assert sorted((repo / "results").glob("certificates/*.json")) == before
    assert _stale(repo)


@pytest.mark.slow
def test_an_edit_in_a_branch_the_probe_does_not_run_is_refused(repo):
    _edit(repo, "hafvt/train.py", 'return torch.autocast("cuda", dtype=torch.bfloat16)',
          'return torch.autocast("cuda", dtype=torch.float16)')
    [rep] = certify([repo / RESULT], root=repo, progress=False)
    assert "changed lines not covered" in rep.get("refused", "") and "hafvt/train.py" in rep["refused"], rep
    assert _stale(repo)


def test_error_only_statements_are_those_that_can_only_end_in_raise():
    import ast

    src = (
        "def f(x):\n"                      # 1
        "    if x < 0:\n"                  # 2
        "        why = f'{x} < 0'\n"        # 3 error-only
        "        raise ValueError(why)\n"  # 4 error-only
        "    try:\n"                       # 5
        "        y = 1 / x\n"              # 6
        "    except ZeroDivisionError:\n"  # 7
        "        raise ValueError('0')\n"  # 8 error-only (a handler that raises)
        "    if x > 9:\n"                  # 9
        "        x = 9\n"                  # 10 not: the block goes on
        "    if x > 8:\n"                  # 11
        "        if y:\n"                  # 12
        "            return 1\n"           # 13 not: the outer block can return
        "        raise ValueError\n"       # 14
        "    return y\n"                   # 15
    )
    assert error_only_statements(ast.parse(src)) == {3, 4, 8}


@pytest.mark.slow
def test_a_new_check_on_an_error_path_is_certified(repo):
    """A raise added where the probe never goes (a range check) cannot change a result that exists."""
    _edit(repo, "hafvt/train.py", "    t0 = time.perf_counter()\n",
          "    t0 = time.perf_counter()\n    if cfg.epochs > 10 ** 9:\n        raise ValueError(f'{cfg.epochs} epochs')\n")
    [rep] = certify([repo / RESULT], root=repo, progress=False)
    assert "certificate" in rep, rep
    c = json.loads((repo / rep["certificate"]).read_text())["changed"]["hafvt/train.py"]
    assert c["covered"] and c["not_run"] == [] and len(c["error_paths"]) == 1
    assert check([repo / RESULT, repo / "results" / "certificates"], root=repo) == []


@pytest.mark.slow
def test_a_record_without_imports_depends_only_on_what_its_commands_import(repo):
    """An older record (no ``loaded``) counts every Python file; certify runs its commands under both trees in
    a process of their own and finds an unrun change in a module they never import harmless, and one in a
    module they do import not (the negative control)."""
    rec = json.loads((repo / RESULT).read_text())
    del rec["provenance"]["loaded"]
    (repo / RESULT).write_text(json.dumps(rec))
    body = "def f(x):\n    return x + 1\n"
    _edit(repo, "hafvt/data/amazon.py", "from __future__ import annotations\n", "from __future__ import annotations\n" + body)
    assert [p["changed"] for p in _stale(repo)] == [["hafvt/data/amazon.py"]]
    [rep] = certify([repo / RESULT], root=repo, progress=False)
    assert "certificate" in rep, rep
    assert json.loads((repo / rep["certificate"]).read_text())["changed"]["hafvt/data/amazon.py"]["not_imported"]
    _edit(repo, "hafvt/metrics.py", "from __future__ import annotations\n", "from __future__ import annotations\n" + body)
    [rep] = certify([repo / RESULT], root=repo, progress=False)
    assert "changed lines not covered" in rep.get("refused", "") and "hafvt/metrics.py" in rep["refused"], rep
