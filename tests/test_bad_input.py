"""Bad input and faults, as a table: each case is a command a careless or hostile user might type (on the
tiny demo or a small fixture) and the one line it must get. ``hafvt`` exits with ``code`` (2: a clear
error), writes exactly one line to stderr (no traceback) that matches ``message``, and ``check``
(if any) asserts that nothing was lost or reused. Adding a case is one line.

Format fields of ``argv``: ``{demo}`` a fresh copy of the tiny demo (images, fixture tables), ``{tmp}``
the case's own folder, ``{repo}`` the repository; a ``setup`` adds its own fields.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hafvt.cli import main
from helpers import REPO, write_fixture_tables


@dataclass(frozen=True)
class Case:
    id: str
    argv: str
    message: str | None  # a regex the single stderr line must match (None: nothing on stderr)
    setup: str | None = None  # a key of SETUPS
    check: str | None = None  # a key of CHECKS
    code: int = 2
    stdout: str | None = None  # a regex stdout must match (a command that reports on stdout)


TRAIN = "train {demo} --config {repo}/configs/sasrec.yaml --set epochs=1 --set hidden=16 --set n_neg=99 --quiet --out {tmp}/run"
HAFVT = "train {demo} --config {repo}/configs/hafvt.yaml --set epochs=1 --set q=16 --set n_neg=99 --quiet --out {tmp}/run"
TABLE = ("reproduce {demo} --table 2 --rows popularity,sasrec --seeds 1 --epochs 1 --set hidden=16 --set n_neg=99 "
         "--quiet --out {tmp}/t")
RESUME = ("train {demo} --config {repo}/configs/sasrec.yaml --set epochs=2 --set eval_every=1 --set hidden=16 "
          "--set n_neg=99 --quiet --out {run}")
EMBED = "embed {demo} --model hafvt-test-tiny --pretrained random-init --device cpu --workers 0"

CASES = [
    # --- configuration values (Config.validate: a range for every numeric key)
    Case("set-q-zero", HAFVT + " --set q=0", r"config key q must be >= 1, got 0"),
    Case("set-n-neg-zero", TRAIN + " --set n_neg=0", r"config key n_neg must be >= 1, got 0"),
    Case("set-lambda1-negative", HAFVT + " --set lambda1=-5", r"config key lambda1 must be >= 0, got -5"),
    Case("set-amp-maybe", TRAIN + " --set amp=maybe", r"config key amp: expected true or false, got 'maybe'"),
    Case("set-temperature-zero", HAFVT + " --set temperature=0", r"config key temperature must be > 0, got 0"),
    Case("set-epochs-fraction", TRAIN + " --set epochs=1.5", r"config key epochs: expected an integer, got 1.5"),
    Case("set-heads-not-dividing", HAFVT + " --set n_heads=3", r"n_heads=3 must divide the attention width 16"),
    Case("set-unknown-key", TRAIN + " --set qq=3", r"--set: unknown config key\(s\): qq"),
    Case("config-yaml-syntax", TRAIN.replace("{repo}/configs/sasrec.yaml", "{bad_yaml}"), r"bad\.yaml:\d+: not valid YAML",
         setup="bad_yaml"),
    Case("config-top-level-list", TRAIN.replace("{repo}/configs/sasrec.yaml", "{list_yaml}"),
         r"list\.yaml: expected a mapping of config keys, got a list", setup="list_yaml"),
    # --- reuse of finished runs (#31.1): only a run made for the same config, seed, data and sources
    Case("reproduce-other-epochs", TABLE.replace("--epochs 1", "--epochs 2"),
         r"runs/popularity/seed0: a finished run made with another config \(epochs 1 -> 2\); use another --out, or "
         r"delete the run", setup="table", check="table_unchanged"),
    Case("reproduce-other-set", TABLE + " --set hidden=8", r"made with another config \(hidden 16 -> 8\)",
         setup="table", check="table_unchanged"),
    Case("reproduce-other-scenario", TABLE.replace("{demo}", "{demo2}"), r"made from other data \(data hash",
         setup="table", check="table_unchanged"),
    Case("reproduce-grid-keeps-old-seed0", TABLE + " --grid paper", r"sasrec/seed0: a finished run made with another config \(l2 ",
         setup="table", check="table_unchanged"),
    Case("reproduce-locked-out", TABLE, r"/t is in use by hafvt reproduce \(pid \d+\); wait for it", setup="locked"),
    Case("train-locked-out", TRAIN, r"/run is in use by hafvt train \(pid \d+\); wait for it", setup="locked_run"),
    # --- results are readable by the other users of a shared file system (#31.15): 0644 under umask 022
    Case("results-not-private", TRAIN, None, code=0, setup="umask_022", check="results_0644"),
    # --- outputs: never over an input, never into a folder the command does not own (#31.4)
    Case("derive-over-its-source", "derive {demo} {demo}", r"the output folder is the input", check="demo_files_unchanged"),
    Case("demo-over-a-scenario", "demo {demo} --size tiny", r"holds files that are not a demo scenario \(Alist\.txt",
         setup="not_a_demo", check="demo_files_unchanged"),
    Case("derive-empty-valid", "derive {demo} {tmp}/mini --train-fraction 0.999",
         r"derive: train_fraction 0\.999 of the \d+ users of the valid split leaves the new valid split empty"),
    # --- provenance check (#31.6): every source compared, numbers against their own log and runs
    Case("check-edited-source-hash", "provenance check {run}/results.json",
         r"1 results file\(s\) neither made by the current sources", setup="run_edited_hash", code=1,
         stdout=r"its source hash \w+ is not that of the sources it lists"),
    Case("check-edited-metric", "provenance check {run}/results.json", r"1 results file\(s\) neither made",
         setup="run_edited_metric", code=1, stdout=r"its X metrics are not those its log holds at the selected epoch"),
    Case("check-table-unknown-key", "provenance check {tmp}/t/table2.json", r"1 results file\(s\) neither made",
         setup="table_unknown_key", code=1, stdout=r"row sasrec: its resolved config holds keys this hafvt does not know: colour"),
    # --- checkpoints (#31.7): damage of any kind and a change of sources are named, nothing is resumed
    Case("checkpoint-truncated", RESUME, r"checkpoint\.pt: damaged checkpoint, cannot be read", setup="ckpt_truncated"),
    Case("checkpoint-empty", RESUME, r"checkpoint\.pt: damaged checkpoint, cannot be read", setup="ckpt_empty"),
    Case("checkpoint-missing-keys", RESUME, r"checkpoint\.pt: not a whole checkpoint of this hafvt \(lacks optim;",
         setup="ckpt_missing_key"),
    Case("checkpoint-wrong-shape", RESUME, r"checkpoint\.pt does not fit this model", setup="ckpt_wrong_shape"),
    Case("checkpoint-bytes-overwritten", RESUME, r"checkpoint\.pt: damaged checkpoint", setup="ckpt_bytes"),
    Case("checkpoint-other-sources", RESUME, r"checkpoint\.pt was made by other sources \(hafvt/train\.py changed since\)",
         setup="ckpt_sources"),
    # --- the data files (#31.13, #31.14): file and line for a value no array or date can hold
    Case("huge-uid", "stats {demo}", r"validdata_new\.txt:1: uid 99999999999999999999 or sample_id -?\d+ does not fit a 64-bit",
         setup="huge_uid"),
    Case("huge-timestamp", "stats {demo}", r"testdata_new\.txt:1: token 1: unix_ts 99999999999999 is not a date",
         setup="huge_ts"),
    Case("userlist-duplicate", "stats {demo}", r"userlist\.txt:\d+: user '.+' / uid -?\d+ is listed twice \(first on line 1\)",
         setup="dup_user"),
    Case("stats-json-empty-split", "stats {demo} --json", None, setup="empty_train", code=0, check="stdout_is_json"),
    Case("catalogue-truncated-gz", "catalogue attach {demo} --meta-x {gz} --meta-y {gz}",
         r"meta\.json\.gz: after line \d+: the gzip stream is truncated or damaged", setup="truncated_gz"),
    # --- a bug is one line too, its traceback behind --debug
    Case("internal-error-one-line", "stats {demo}", r"hafvt stats: internal error: ZeroDivisionError: .*--debug for the traceback",
         setup="internal_error", code=1),
    # --- embed (a cache name is one folder in <scenario>/embeddings/: nothing outside it is written or deleted)
    Case("embed-name-absolute-dir", EMBED + " --name {victim}", r"--name '.*victim': a cache name is a plain folder name",
         setup="victim_dir", check="victim_kept"),
    Case("embed-name-dotdot", EMBED + " --name ..", r"--name '\.\.': a cache name is a plain folder name",
         setup="victim_dir", check="demo_intact"),
    Case("embed-name-empty", EMBED + " --name ''", r"--name '': a cache name is a plain folder name",
         setup="victim_dir", check="demo_intact"),
]

# --------------------------------------------------------------------------- fixtures of the cases


def _bad_yaml(tmp: Path, f: dict) -> dict:
    (tmp / "bad.yaml").write_text("model: sasrec\nhidden: [16\n")
    return {"bad_yaml": tmp / "bad.yaml"}


def _list_yaml(tmp: Path, f: dict) -> dict:
    (tmp / "list.yaml").write_text("- model: sasrec\n")
    return {"list_yaml": tmp / "list.yaml"}


SETUPS = {"bad_yaml": _bad_yaml, "list_yaml": _list_yaml}
CHECKS: dict = {}
_UNDO: list = []  # what a setup started or patched, undone after its case

# --- run, table and data setups


def _cli(argv: str, **fields) -> None:
    assert main(shlex.split(argv.format(**fields))) == 0


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _table(tmp: Path, f: dict) -> dict:
    """A finished one-seed table in {tmp}/t, and a second demo (seed 1) as another scenario."""
    from hafvt.data.demo import write_demo

    _cli(TABLE, **f)
    return {"demo2": write_demo(tmp / "tiny2", size="tiny", seed=1, images=False), "table_files": _files(tmp / "t")}


def _table_unchanged(tmp: Path, f: dict) -> None:
    now = _files(tmp / "t")  # a grid search may add its runs; no file of the table is overwritten or removed
    assert {k: now.get(k) for k in f["table_files"]} == f["table_files"]


def _locked(tmp: Path, f: dict, folder: str = "t", what: str = "hafvt reproduce") -> dict:
    """A second process that holds {tmp}/t as a running ``hafvt reproduce`` does."""
    import subprocess
    import sys

    code = ("import sys, time; from hafvt.io import exclusive\n"
            "with exclusive(sys.argv[1], sys.argv[2]):\n    print('ready', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp / folder), what], stdout=subprocess.PIPE, text=True)
    _UNDO.append(proc.kill)
    assert proc.stdout.readline().strip() == "ready"
    return {}


def _umask_022(tmp: Path, f: dict) -> dict:
    import os

    old = os.umask(0o022)
    _UNDO.append(lambda: os.umask(old))
    return {}


def _results_0644(tmp: Path, f: dict) -> None:
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp / "run").iterdir()}
    assert modes == dict.fromkeys(modes, 0o644) and "results.json" in modes  # mkstemp alone gives 0600


def _not_a_demo(tmp: Path, f: dict) -> dict:
    (f["demo"] / "demo.json").unlink()  # a scenario folder that no `hafvt demo` wrote
    return {"demo_files": _files(f["demo"])}


def _demo_files_unchanged(tmp: Path, f: dict) -> None:
    assert _files(f["demo"]) == f["demo_files"]


def _run(tmp: Path, f: dict) -> Path:
    _cli(TRAIN, **f)
    return tmp / "run"


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _run_edited_hash(tmp: Path, f: dict) -> dict:
    """A stale run whose source hash was edited to the current one (its per-file digests still differ)."""
    run = _run(tmp, f)
    _edit_json(run / "results.json", lambda d: d["provenance"]["sources"].update({"hafvt/train.py": "0" * 16}))
    return {"run": run}


def _run_edited_metric(tmp: Path, f: dict) -> dict:
    run = _run(tmp, f)
    _edit_json(run / "results.json", lambda d: d["metrics"]["sampled"]["X"].update(mrr=0.99))
    return {"run": run}


def _table_unknown_key(tmp: Path, f: dict) -> dict:
    out = _table(tmp, f)
    _edit_json(tmp / "t" / "table2.json", lambda d: d["rows"][1]["resolved_config"].update(colour="red"))
    return out


def _checkpoint(tmp: Path, f: dict, damage) -> dict:
    """A run stopped after its last checkpoint (results removed, so the command resumes), then damaged."""
    import torch

    run = tmp / "run"
    _cli(RESUME, run=run, **f)
    (run / "results.json").unlink()
    (run / "test_ranks.npz").unlink()
    ckpt = run / "checkpoint.pt"
    if damage.__code__.co_argcount == 1:
        damage(ckpt)
    else:
        from hafvt.train import checkpoint_digest

        saved = torch.load(ckpt, weights_only=True)
        damage(ckpt, saved)
        torch.save({**saved, "digest": checkpoint_digest({k: v for k, v in saved.items() if k != "digest"})}, ckpt)
    return {"run": run}


def _overwrite_bytes(ckpt: Path) -> None:
    data = bytearray(ckpt.read_bytes())
    at = int(len(data) * 0.6)
    data[at:at + 64] = b"\xff" * 64
    ckpt.write_bytes(bytes(data))


def _wrong_shape(ckpt, saved) -> None:
    key = next(k for k, v in saved["model"].items() if v.dim() == 2)
    saved["model"][key] = saved["model"][key][:-1]


def _missing_key(ckpt: Path) -> None:
    import torch

    saved = torch.load(ckpt, weights_only=True)
    del saved["optim"]
    torch.save(saved, ckpt)


def _rewrite(name: str, edit):
    """A setup that rewrites the demo's file ``name`` as ``edit(text)``."""
    def setup(tmp: Path, f: dict) -> dict:
        path = f["demo"] / name
        path.write_text(edit(path.read_text()))
        return {}

    return setup


def _first_line(edit):
    return lambda text: edit(text.splitlines(keepends=True)[0]) + "".join(text.splitlines(keepends=True)[1:])


def _tok_ts(line: str) -> str:
    cols = line.split("\t")
    item, _, date, end = cols[2].split("|")
    return "\t".join([cols[0], cols[1], f"{item}|99999999999999|{date}|{end}", *cols[3:]])


def _truncated_gz(tmp: Path, f: dict) -> dict:
    import gzip

    rows = "".join(json.dumps({"asin": f"B{i:09d}", "title": f"item {i}"}) + "\n" for i in range(2000))
    data = gzip.compress(rows.encode())
    (tmp / "meta.json.gz").write_bytes(data[: len(data) // 2])
    return {"gz": tmp / "meta.json.gz"}


def _internal_error(tmp: Path, f: dict) -> dict:
    import hafvt.data.stats as stats

    real = stats.table1
    stats.table1 = lambda scn: 1 / 0  # a bug, as an unexpected exception stands for one
    _UNDO.append(lambda: setattr(stats, "table1", real))
    return {}


def _stdout_is_json(tmp: Path, f: dict) -> None:
    def no_nan(c):
        raise AssertionError(f"{c} is not JSON")

    stats = json.loads(f["_stdout"], parse_constant=no_nan)
    assert stats["train"] == 0 and stats["avg_length_by_split"]["train"] is None


SETUPS |= {
    "table": _table, "locked": _locked, "locked_run": lambda t, f: _locked(t, f, "run", "hafvt train"),
    "umask_022": _umask_022, "not_a_demo": _not_a_demo, "run_edited_hash": _run_edited_hash,
    "run_edited_metric": _run_edited_metric, "table_unknown_key": _table_unknown_key,
    "ckpt_truncated": lambda t, f: _checkpoint(t, f, lambda c: c.write_bytes(c.read_bytes()[: c.stat().st_size // 2])),
    "ckpt_empty": lambda t, f: _checkpoint(t, f, lambda c: c.write_bytes(b"")),
    "ckpt_missing_key": lambda t, f: _checkpoint(t, f, _missing_key),
    "ckpt_wrong_shape": lambda t, f: _checkpoint(t, f, _wrong_shape),
    "ckpt_bytes": lambda t, f: _checkpoint(t, f, _overwrite_bytes),
    "ckpt_sources": lambda t, f: _checkpoint(t, f, lambda c, s: s["sources"].update({"hafvt/train.py": "0" * 16})),
    "huge_uid": _rewrite("validdata_new.txt", _first_line(lambda ln: "99999999999999999999" + ln[ln.index("\t"):])),
    "huge_ts": _rewrite("testdata_new.txt", _first_line(_tok_ts)),
    "dup_user": _rewrite("userlist.txt", lambda text: text + text.splitlines()[0] + "\n"),
    "empty_train": _rewrite("traindata_new.txt", lambda text: ""),
    "truncated_gz": _truncated_gz, "internal_error": _internal_error,
}
CHECKS |= {"results_0644": _results_0644, "table_unchanged": _table_unchanged, "demo_files_unchanged": _demo_files_unchanged, "stdout_is_json": _stdout_is_json}

# --- embed setups


def _victim_dir(tmp: Path, f: dict) -> dict:
    """A folder with a file that ``--name`` must not touch; the tiny test model, so a run would really embed."""
    from hafvt.embed.demo_encoder import register_config, tiny_config

    register_config("hafvt-test-tiny", tiny_config(image_size=32, patch_size=16, width=32, layers=1, embed_dim=32,
                                                   context_length=16))
    (tmp / "victim").mkdir()
    (tmp / "victim" / "keep.txt").write_text("keep")
    return {"victim": tmp / "victim", "before": _tree(f["demo"])}


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _victim_kept(tmp: Path, f: dict) -> None:
    assert [p.name for p in (tmp / "victim").iterdir()] == ["keep.txt"] and (tmp / "victim" / "keep.txt").read_text() == "keep"


def _demo_intact(tmp: Path, f: dict) -> None:
    assert _tree(f["demo"]) == f["before"]  # nothing in the scenario removed, added or rewritten
    _victim_kept(tmp, f)


SETUPS |= {"victim_dir": _victim_dir}
CHECKS |= {"victim_kept": _victim_kept, "demo_intact": _demo_intact}


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory) -> Path:
    from hafvt.data.c2dsr import read_scenario
    from hafvt.data.demo import write_demo

    d = write_demo(tmp_path_factory.mktemp("bad-input") / "tiny", size="tiny", seed=0, images=True)
    write_fixture_tables(d, read_scenario(d).n_items)
    return d


@pytest.fixture(autouse=True)
def _undo():
    yield
    while _UNDO:
        _UNDO.pop()()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, demo_template: Path, tmp_path: Path, capsys):
    demo = tmp_path / "tiny"
    shutil.copytree(demo_template, demo)
    fields = {"demo": demo, "tmp": tmp_path, "repo": REPO, "demo_files": _files(demo)}
    if case.setup:
        fields |= SETUPS[case.setup](tmp_path, fields)
    capsys.readouterr()
    try:
        rc = main(shlex.split(case.argv.format(**fields)))
    except SystemExit as e:  # what the interpreter does with it: a text goes to stderr, status 1
        print(e.code, file=sys.stderr)
        rc = 1 if isinstance(e.code, str) else e.code
    out, err = capsys.readouterr()
    err = [ln for ln in err.splitlines() if ln.strip()]
    if case.message is None:
        assert err == [], "\n".join(err[-20:])
    else:
        assert len(err) == 1, f"expected one line on stderr, got {len(err)}:\n" + "\n".join(err[-20:])
        assert re.search(case.message, err[0]), err[0]
    assert rc == case.code, err
    if case.stdout:
        assert re.search(case.stdout, out), out[-2000:]
    if case.check:
        CHECKS[case.check](tmp_path, {**fields, "_stdout": out})


def test_the_readme_gives_the_count():
    assert f"the table of {len(CASES)} such inputs and faults" in (REPO / "README.md").read_text()


def test_every_case_is_named_once():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert set(SETUPS) >= {c.setup for c in CASES if c.setup} and set(CHECKS) >= {c.check for c in CASES if c.check}
    assert json.dumps([c.message for c in CASES])  # plain strings
