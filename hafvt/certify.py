"""Equivalence certificates: a result stays valid when the sources that made it changed without changing
what it computes.

``certify`` takes each stale result (a JSON results file whose recorded sources differ from the current
ones in files that count for it), runs ``hafvt/probe.py`` on every configuration it holds and on the
command line, once under the recorded sources (a git worktree at the recorded commit) and once under the
current ones (measured with ``coverage``), and writes ``results/certificates/<old>-<new>.json`` only when
the probe digests are equal **and** every changed statement of the current sources ran in the probe, except
statements on an error path (``error_only_statements``: they end in ``raise``, so a result that exists did
not pass through them) and, for a record that does not list its imports, files that the commands it was
made with import under neither tree (the probe measures that in a process of its own). ``check`` accepts a
stale record that a valid certificate names. A certificate carries a digest of its own content: an edited manifest,
digest or result list makes it invalid.
"""
from __future__ import annotations

import ast
import difflib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tokenize
from datetime import datetime, timezone
from pathlib import Path

import yaml

from hafvt import provenance as P
from hafvt.io import atomic_write_json

CERTIFICATES = "results/certificates"
VERSION = 2  # 2: the probe runs the command line too; a changed statement may be left unrun on an error path only,
# or in a file that the commands the results were made with do not import (under either tree). 1 is still read.
READ_VERSIONS = (1, 2)
# pyproject.toml keys whose change alters what the package computes; the rest (extras, tool settings) cannot
PYPROJECT_KEYS = (("project", "dependencies"), ("project", "requires-python"), ("build-system",))


# --------------------------------------------------------------------------- reading and accepting


def certificate_digest(cert: dict) -> str:
    body = {k: v for k, v in cert.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def certificate_problem(cert: dict) -> str | None:
    """Why a certificate is not valid (None: it is)."""
    if cert.get("kind") != "certificate" or cert.get("version") not in READ_VERSIONS:
        return "not a certificate of this version"
    if cert.get("digest") != certificate_digest(cert):
        return "its digest does not match its content (edited by hand?)"
    for side in ("old", "new"):
        s = cert[side]
        if P.manifest_hash(s["sources"]) != s["source_hash"]:
            return f"its {side} manifest does not hash to its {side} source hash"
    probe = cert["probe"]
    if not probe["rows"] or probe["old"] != probe["new"]:
        return "its probe digests differ"
    if any(not c["covered"] for c in cert["changed"].values()):
        return "it names changed lines that the probe did not run"
    return None


def load_certificates(root: Path = P.REPO) -> list[dict]:
    """Every certificate under ``results/certificates`` with ``"_file"`` and ``"_problem"`` (None = valid)."""
    out = []
    for f in sorted((root / CERTIFICATES).glob("*.json")):
        try:
            c = json.loads(f.read_text())
            why = certificate_problem(c)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            c, why = {}, f"unreadable: {e}"
        out.append({**c, "_file": P.portable(f, root), "_problem": why})
    return out


def certificate_for(r: dict, rel: str, certs: list[dict], current, uses: bool) -> tuple[dict | None, str, list[str]]:
    """The valid certificate that makes record ``r`` of results file ``rel`` current, or (None, why not, the
    files changed since the certificate that named it, if one did)."""
    why, since = "", []
    for c in certs:
        if c["_problem"] or c["old"]["source_hash"] != r["source_hash"] or c["old"]["digest"] != P.scheme_of(r):
            continue
        if c["results"].get(rel) != P.record_digest(r):
            why = f"{c['_file']} does not name this record"
            continue
        since = P._changed(c["new"]["sources"], current(c["new"]["digest"]), r, uses)
        if since:
            why = f"{c['_file']} certifies sources that changed since"
            continue
        return c, "", []
    return None, why, since


# --------------------------------------------------------------------------- what changed


def _statement_lines(tree: ast.AST) -> dict[int, int]:
    """Line -> first line of the innermost statement spanning it (decorators belong to their def)."""
    out: dict[int, tuple[int, int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            span = node.end_lineno - first
            for ln in range(first, node.end_lineno + 1):
                if ln not in out or span < out[ln][1]:
                    out[ln] = (node.lineno, span)
    return {ln: first for ln, (first, _) in out.items()}


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines |= set(range(first.lineno, first.end_lineno + 1))
    return lines


# statements after which a block can go on other than by raising (or leave the block other than at its end)
_NOT_ERROR_ONLY = (ast.Return, ast.Yield, ast.YieldFrom, ast.Await, ast.Break, ast.Continue, ast.For, ast.AsyncFor,
                   ast.While, ast.With, ast.AsyncWith, ast.Try, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def error_only_statements(tree: ast.AST) -> set[int]:
    """First lines of the statements that run only on the way to an exception: those of a block (a body, an
    else or an except handler) that ends in ``raise`` and holds no loop, return, yield, with, try or def. A
    result that exists was made on a path where none of them ran to its end, so none can change it."""
    out = set()
    for node in ast.walk(tree):
        for block in (getattr(node, "body", None), getattr(node, "orelse", None)):
            if isinstance(block, list) and block and isinstance(block[-1], ast.Raise) and \
                    not any(isinstance(n, _NOT_ERROR_ONLY) for s in block for n in ast.walk(s)):
                out |= {n.lineno for s in block for n in ast.walk(s) if isinstance(n, ast.stmt)}
    return out


def _code_lines(text: str) -> list[str]:
    """The lines of a Python source with comments and trailing blanks removed (so a comment edit is no change)."""
    lines = text.splitlines()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                row, col = tok.start
                lines[row - 1] = lines[row - 1][:col]
    except (tokenize.TokenError, SyntaxError):
        pass
    return [ln.rstrip() for ln in lines]


def changed_statements(old: str | None, new: str) -> set[int]:
    """First lines of the statements of ``new`` that a line diff against ``old`` touches (None: a new file;
    every statement). Comments, blank lines and docstrings are not statements; a deletion touches the
    statement that now stands where the deleted lines were."""
    tree = ast.parse(new)
    stmt, docs = _statement_lines(tree), _docstring_lines(tree)
    if old is None:
        touched = set(stmt)
    else:
        touched = set()
        a, b = _code_lines(old), _code_lines(new)
        for op, _, _, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            if op in ("replace", "insert"):
                touched |= set(range(j1 + 1, j2 + 1))
            elif op == "delete":
                touched.add(min(j1 + 1, len(b)))
    return {stmt[ln] for ln in touched if ln in stmt and ln not in docs}


def _same_yaml(a: bytes, b: bytes) -> bool:
    return yaml.safe_load(a) == yaml.safe_load(b)


def _same_pyproject(a: bytes, b: bytes) -> bool:
    import tomllib
    ta, tb = tomllib.loads(a.decode()), tomllib.loads(b.decode())

    def get(t, keys):
        for k in keys:
            t = t.get(k, {}) if isinstance(t, dict) else {}
        return t

    return all(get(ta, k) == get(tb, k) for k in PYPROJECT_KEYS)


# --------------------------------------------------------------------------- certifying


def _configs(data: dict) -> list[tuple[dict, int]]:
    """The (configuration, seed) pairs a results file's numbers come from."""
    if "rows" in data:  # a table: each row's resolved configuration, at seed 0
        return [(r["resolved_config"], 0) for r in data["rows"] if r.get("resolved_config")]
    prov = data.get("provenance") or {}
    if isinstance(prov.get("config"), dict):
        return [(prov["config"], int(prov.get("seed", 0)))]
    return []


def _spec_id(cfg: dict, seed: int) -> str:
    return hashlib.sha256(json.dumps([cfg, seed], sort_keys=True).encode()).hexdigest()[:12]


def _variants(specs: dict, changed: list[str], root: Path) -> list[dict]:
    """Beyond the results' own configurations: the HAF-VT model's other code paths that compute the same
    numbers (the batched encoders, the plain softmax form), on the first HAF-VT configuration, and each
    changed baseline that no configuration uses, at its row's configuration (``configs/<name>.yaml``), so
    that a change there is compared too, not left uncovered."""
    from hafvt.config import load_config

    out = []
    first = next((s for k, s in sorted(specs.items()) if s["config"].get("model") == "hafvt"), None)
    if first is not None:
        batched = {**first["config"], "batched_encoders": True}
        out += [{"id": _spec_id(batched, first["seed"]), "config": batched, "seed": first["seed"]},
                {"id": first["id"] + "-reference-loss", "config": first["config"], "seed": first["seed"], "reference_loss": True}]
    used = {s["config"].get("model") for s in specs.values()}
    for f in changed:
        name = Path(f).stem
        if f.startswith("hafvt/models/baselines/") and name not in used and (root / "configs" / f"{name}.yaml").is_file():
            cfg = load_config(root / "configs" / f"{name}.yaml").to_dict()
            out.append({"id": _spec_id(cfg, 0), "config": cfg, "seed": 0})
    return out


def _run_probe(tree: Path, specs: list[dict], work: Path, coverage_of: Path | None = None) -> dict:
    """``{"digests": {spec id | "embeddings" | "commands": digest}, "loaded": [files the recorded commands import]}``."""
    driver = work / "probe_driver.py"  # a copy: run from hafvt/, the script's folder would shadow modules
    shutil.copy(Path(__file__).with_name("probe.py"), driver)
    spec_file, out_file = work / "specs.json", work / f"digests-{len(list(work.iterdir()))}.json"
    spec_file.write_text(json.dumps(specs))
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, str(driver), str(tree), str(spec_file), str(out_file)]
    if coverage_of is not None:
        cmd = [sys.executable, "-m", "coverage", "run", f"--data-file={coverage_of}",
               f"--include={tree.resolve()}/hafvt/*", *cmd[1:]]
    res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise _Refused(f"the probe failed under {tree.name if tree != P.REPO else 'the current sources'}: "
                       + (res.stderr.strip().splitlines() or ["no message"])[-1])
    return json.loads(out_file.read_text())


def _executed(data_file: Path, root: Path) -> dict[str, set[int]]:
    import coverage

    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    out = {}
    for f in data.measured_files():
        p = Path(f).resolve()
        if root.resolve() in p.parents:
            out[p.relative_to(root.resolve()).as_posix()] = set(data.lines(f) or ())
    return out


def stale_records(paths=None, root: Path = P.REPO) -> list[tuple[str, dict, dict]]:
    """(file, record, data) of every JSON results record that is stale and not certified."""
    current = P._Current(root)
    certs = load_certificates(root)
    files = []
    for p in [Path(x) for x in (paths or [root / r for r in P.RESULTS])]:
        p = p if p.is_absolute() else root / p
        files += sorted(p.rglob("*.json")) if p.is_dir() else [p]
    out = []
    for f in files:
        if f.parent.name == "certificates":
            continue
        data = json.loads(f.read_text())
        uses = P._uses_embeddings(data)
        for r in P.records_in(f):
            if "sources" in r and P.stale_sources(r, P.portable(f, root), uses, current, certs, root)[0]:
                out.append((P.portable(f, root), r, data))
    return out


def certify(paths=None, root: Path = P.REPO, progress: bool = True) -> list[dict]:
    """Certify what can be certified; returns ``[{"old", "results", "certificate" | "refused"}]``."""
    groups: dict[tuple, list] = {}
    for rel, r, data in stale_records(paths, root):
        groups.setdefault((r["commit"], r["source_hash"], P.scheme_of(r)), []).append((rel, r, data))
    reports = []
    for (commit, old_hash, scheme), items in groups.items():
        report = {"old": old_hash, "commit": commit, "results": sorted({rel for rel, *_ in items})}
        try:
            report["certificate"] = _certify_group(commit, scheme, items, root, progress)
        except _Refused as e:
            report["refused"] = str(e)
        reports.append(report)
    return reports


class _Refused(Exception):
    pass


def _certify_group(commit: str, scheme: str, items: list, root: Path, progress: bool) -> str:
    old_sources = items[0][1]["sources"]
    if any(r.get("dirty") is not False for _, r, _ in items):
        raise _Refused("made from uncommitted sources (dirty): nothing to check the probe out at")
    if P.manifest_at(commit, root, scheme) != old_sources:
        raise _Refused(f"its sources are not those of commit {commit[:10]} (or this clone lacks the commit)")
    new_sources = P.source_manifest(root)
    counted = sorted({f for _, r, data in items for f in P._changed(
        old_sources, P.source_manifest(root, scheme), r, P._uses_embeddings(data))})
    old_files = P.files_at(commit, root, set(counted))
    must_run: dict[str, set[int]] = {}
    for f in counted:
        old, path = old_files.get(f), root / f
        new = path.read_bytes() if path.is_file() else None
        if new is None:
            continue  # a deleted file: the probe shows whether anything needed it
        if f.endswith(".py"):
            if old is not None and P.normalised_python(old) == P.normalised_python(new):
                continue  # docstrings, comments, formatting
            must_run[f] = changed_statements(None if old is None else old.decode(), new.decode())
        elif f.endswith(".yaml") and old is not None and _same_yaml(old, new):
            continue
        elif f == "pyproject.toml" and old is not None and _same_pyproject(old, new):
            continue
        else:
            raise _Refused(f"{f} changed and is not Python (a probe cannot show that it computes the same)")
    specs = {}
    for _, _, data in items:
        for cfg, seed in _configs(data):
            specs[_spec_id(cfg, seed)] = {"id": _spec_id(cfg, seed), "config": cfg, "seed": seed}
    if not specs:
        raise _Refused("holds no configuration to probe")
    specs = [specs[k] for k in sorted(specs)] + _variants(specs, sorted(must_run), root)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tree = tmp / "old"
        wt = P._git("worktree", "add", "--detach", "--force", str(tree), commit, root=root)
        if wt.returncode != 0:
            raise _Refused(f"git worktree at {commit[:10]}: {wt.stderr.strip()}")
        try:
            if progress:
                print(f"certify: probing {len(specs)} configurations under {commit[:10]} and the current sources",
                      file=sys.stderr)
            work = tmp / "work"
            work.mkdir()
            old_run = _run_probe(tree, specs, work)
            new_run = _run_probe(root, specs, work, coverage_of=tmp / "coverage")
            executed = _executed(tmp / "coverage", root)
            old_digests, new_digests = old_run["digests"], new_run["digests"]
            imported = set(old_run["loaded"]) | set(new_run["loaded"])
        finally:
            P._git("worktree", "remove", "--force", str(tree), root=root)
    differ = sorted(k for k in old_digests if old_digests[k] != new_digests.get(k))
    if differ:
        names = {s["id"]: s["config"].get("model", "?") for s in specs} | {"embeddings": "the embedding cache"}
        rows = [names.get(k, k) for k in differ]
        raise _Refused(f"probe outputs differ for {len(differ)} of {len(specs)} configurations ({', '.join(rows)})")
    changed = {}
    for f, lines in sorted(must_run.items()):
        if f not in imported and all("loaded" not in r for _, r, _ in items):  # nor could the results have run it
            changed[f] = {"statements": sorted(lines), "not_run": [], "not_imported": True, "covered": True}
            continue
        error_only = error_only_statements(ast.parse((root / f).read_bytes()))
        missed = sorted(lines - executed.get(f, set()))
        changed[f] = {"statements": sorted(lines), "not_run": [ln for ln in missed if ln not in error_only],
                      "error_paths": [ln for ln in missed if ln in error_only]}
        changed[f]["covered"] = not changed[f]["not_run"]
    uncovered = {f: c["not_run"] for f, c in changed.items() if not c["covered"]}
    if uncovered:
        raise _Refused("changed lines not covered by the probe: " + "; ".join(f"{f} lines {v}" for f, v in uncovered.items()))
    cert = {
        "kind": "certificate", "version": VERSION,
        "old": {"commit": commit, "source_hash": items[0][1]["source_hash"], "digest": scheme, "sources": old_sources},
        "new": {**P.git_commit(root), "source_hash": P.manifest_hash(new_sources), "digest": P.DIGEST, "sources": new_sources},
        "results": {rel: P.record_digest(r) for rel, r, _ in sorted(items, key=lambda x: x[0])},
        "probe": {"rows": [{"id": s["id"], "model": s["config"].get("model"), "seed": s["seed"]} for s in specs],
                  "old": old_digests, "new": new_digests, "overrides": _probe_overrides(),
                  "imported": {"old": old_run["loaded"], "new": new_run["loaded"]},
                  "scenario": "demo tiny, seed 0, with images: the embedding pipeline (random-init open_clip) and the "
                              "oracle cache; the command line on a tiny demo of seed 1 (hafvt/probe.py)"},
        "changed": changed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": P.versions(), "cpu": P.cpu_info(),
    }
    cert["digest"] = certificate_digest(cert)
    name = f"{cert['old']['source_hash']}-{cert['new']['source_hash']}.json"
    atomic_write_json(root / CERTIFICATES / name, cert)
    for older in (root / CERTIFICATES).glob(f"{cert['old']['source_hash']}-*.json"):  # superseded by this one
        if older.name != name and set(json.loads(older.read_text()).get("results", {})) <= set(cert["results"]):
            older.unlink()
    return f"{CERTIFICATES}/{name}"


def _probe_overrides() -> dict:
    from hafvt.probe import PROBE_OVERRIDES

    return dict(PROBE_OVERRIDES)


def cmd_certify(args) -> int:
    reports = certify(args.paths or None)
    if not reports:
        print("nothing to certify: every results file is made by the current sources or certified for them")
        return 0
    refused = 0
    for rep in reports:
        n = len(rep["results"])
        if "certificate" in rep:
            print(f"certified: {n} results file(s) made by {rep['old']} at {str(rep['commit'])[:10]} -> {rep['certificate']}")
        else:
            refused += 1
            print(f"refused: {n} results file(s) made by {rep['old']} at {str(rep['commit'])[:10]}: {rep['refused']}")
            for f in rep["results"][:10]:
                print(f"    {f}")
    return 1 if refused else 0
