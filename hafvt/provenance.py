"""Where a number comes from, and whether the sources that made it are still the current ones.

Every results file carries a provenance record (``record`` / ``run_provenance``): the commit, a
hash of the *source files that determine numbers* (``SOURCES``: the package, the configs, the
notebook sources and their parameters, the scripts, ``pyproject.toml``) with one hash per file,
a dirty flag computed over those files only, the command or notebook parameters, device,
versions and time. ``check`` (``hafvt provenance check``) compares committed results with the
current sources and names the files that changed since. Paths are never absolute: ``portable``
makes them relative to the repository.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import hafvt

REPO = Path(hafvt.__file__).resolve().parents[1]
# The files whose content determines numbers (globs relative to the repository root).
SOURCES = ("hafvt/**/*.py", "hafvt/**/*.json", "configs/*.yaml", "notebooks/*.ipynb", "notebooks/*.md",
           "notebooks/params/*.yaml", "scripts/*.py", "pyproject.toml")
# Where committed results live (the default of ``hafvt provenance check``).
RESULTS = ("results", "book/_static/results", "book/notebooks")
NOTEBOOK_KEY = "hafvt_provenance"  # output metadata key of the provenance cell in executed notebooks
# An absolute path of some machine, as it would appear inside a results file.
ABSOLUTE = re.compile(r"""(?<![\w.~/-])(/(?:work|home|tmp|root|Users|mnt|private|var/folders|opt|srv|data)/[^\s"'<>)\]]*|[A-Z]:\\\\[^\s"'<>]*)""")


# --------------------------------------------------------------------------- sources


def _glob_regex(g: str) -> re.Pattern:
    return re.compile(re.escape(g).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*") + r"\Z")


_SOURCE_RE = [_glob_regex(g) for g in SOURCES]


def _is_source(rel: str) -> bool:
    """Whether a repository-relative path is one of the source files (the whole path matches a glob)."""
    return any(r.match(rel) for r in _SOURCE_RE) and "__pycache__" not in rel and ".ipynb_checkpoints" not in rel


def source_files(root: Path = REPO) -> list[str]:
    """Sorted repository-relative paths of the source files."""
    found = set()
    for g in SOURCES:
        for p in root.glob(g):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and _is_source(rel):
                found.add(rel)
    return sorted(found)


# How source files are digested. "ast-1": a Python file by its syntax tree without docstrings (comments,
# formatting and docstrings cannot change a number); "bytes": by its bytes (records made before ast-1
# carry no "digest" field and are compared in that scheme).
DIGEST = "ast-1"
SCHEMES = ("ast-1", "bytes")


def normalised_python(text: str | bytes) -> str:
    """A Python source as what it computes: its AST dump with module, class and function docstrings
    removed (a body left empty holds ``pass``). The text of a file that does not parse is kept as is."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=True, include_attributes=False)


def file_digest(path: Path, data: bytes | None = None, scheme: str = DIGEST) -> str:
    """sha256 (16 hex) of a source file (``data``: its bytes, if read elsewhere); for a notebook, of its
    cells' types and sources only, so that saving it in JupyterLab (metadata, outputs) does not change it;
    for a Python file in the ast-1 scheme, of ``normalised_python``."""
    data = path.read_bytes() if data is None else data
    if path.suffix == ".ipynb":
        cells = json.loads(data)["cells"]
        data = json.dumps([[c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"]]
                           for c in cells]).encode()
    elif path.suffix == ".py" and scheme == "ast-1":
        data = normalised_python(data).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def scheme_of(rec: dict) -> str:
    return rec.get("digest", "bytes")


def loaded_sources(root: Path = REPO) -> list[str]:
    """The repository's Python sources that this process has imported so far (``sys.modules``)."""
    out = set()
    base = root.resolve()
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f:
            p = Path(f).resolve()
            if base in p.parents and _is_source(rel := p.relative_to(base).as_posix()):
                out.add(rel)
    return sorted(out)


def source_manifest(root: Path = REPO, scheme: str = DIGEST) -> dict[str, str]:
    return {rel: file_digest(root / rel, scheme=scheme) for rel in source_files(root)}


def manifest_hash(manifest: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def source_hash(root: Path = REPO, scheme: str = DIGEST) -> str:
    return manifest_hash(source_manifest(root, scheme))


def _git(*args, root: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)


def files_at(commit: str, root: Path = REPO, wanted=None) -> dict[str, bytes] | None:
    """The source files of a commit (or ``names`` of it), read from git; None where git lacks the commit."""
    tree = _git("ls-tree", "-r", "--name-only", f"{commit}^{{commit}}", root=root)
    if tree.returncode != 0:
        return None
    names = [n for n in tree.stdout.splitlines() if _is_source(n) and (wanted is None or n in wanted)]
    blobs = subprocess.run(["git", "cat-file", "--batch"], cwd=root, capture_output=True, timeout=60,
                           input="".join(f"{commit}:{n}\n" for n in names).encode()).stdout
    out, pos = {}, 0
    for n in names:  # each answer: "<sha> blob <size>\n<bytes>\n"
        head_end = blobs.index(b"\n", pos)
        size = int(blobs[pos:head_end].split()[2])
        out[n] = blobs[head_end + 1:head_end + 1 + size]
        pos = head_end + 2 + size
    return out


def manifest_at(commit: str, root: Path = REPO, scheme: str = DIGEST) -> dict[str, str] | None:
    """The source manifest of a commit, read from git; None where git does not have the commit."""
    files = files_at(commit, root)
    return None if files is None else {n: file_digest(Path(n), data, scheme) for n, data in files.items()}


def git_commit(root: Path = REPO) -> dict:
    """The commit, and whether the source files differ from it (other files never make it dirty).

    On a copy of the tree without ``.git`` (a remote GPU machine), ``HAFVT_GIT_COMMIT`` names the
    commit and ``HAFVT_SOURCE_HASH`` the source hash of that commit; dirty = the hashes differ.
    """
    if os.environ.get("HAFVT_GIT_COMMIT"):
        expected = os.environ.get("HAFVT_SOURCE_HASH")
        return {"commit": os.environ["HAFVT_GIT_COMMIT"], "dirty": None if not expected else source_hash(root) != expected}
    try:
        commit = _git("rev-parse", "HEAD", root=root)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = _git("status", "--porcelain", "--untracked-files=all", "--no-renames", root=root).stdout.splitlines()
        dirty = any(_is_source(line[3:].strip().strip('"')) for line in status)
        return {"commit": commit.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


# --------------------------------------------------------------------------- paths and invocation


# folders a command's absolute paths may name besides the repository and the temporary folder ($OUT:
# where a lent device machine's command writes what comes back)
PATH_VARS = ("OUT", "HOME")


def portable(path: str | Path, root: Path = REPO) -> str:
    """A path as a results file may record it: relative to the repository (``$TMPDIR/...`` inside a
    temporary folder, ``$OUT/...`` or ``$HOME/...`` inside the folder such a variable names), never absolute.
    The path need not exist yet (an output file)."""
    p = Path(os.path.abspath(path)).resolve()
    bases = [(root.resolve(), ""), (Path(tempfile.gettempdir()).resolve(), "$TMPDIR")]
    bases += [(Path(os.environ[v]).resolve(), f"${v}") for v in PATH_VARS if os.environ.get(v, "").startswith("/")]
    for base, prefix in bases:
        if p == base or base in p.parents:
            return "/".join(x for x in (prefix, p.relative_to(base).as_posix()) if x and x != ".") or "."
    return Path(os.path.relpath(p, root.resolve())).as_posix()


_INVOCATION: dict | None = None


def set_invocation(info: dict | None) -> None:
    """Say how the current process was asked to compute (e.g. a notebook and its papermill parameters);
    recorded instead of ``sys.argv`` in every provenance record made afterwards."""
    global _INVOCATION
    _INVOCATION = info


def invocation() -> dict:
    """``{"command": "hafvt train ..."}`` with portable paths, or what ``set_invocation`` said."""
    if _INVOCATION is not None:
        return dict(_INVOCATION)
    argv = list(sys.argv) or ["python"]
    prog = Path(argv[0]).name
    if Path(argv[0]).resolve() == REPO / "hafvt" / "cli.py":  # python -m hafvt.cli
        prog = "hafvt"
    elif prog.endswith(".py"):
        prog = "python " + (portable(argv[0]) if Path(argv[0]).is_file() else prog)
    args = [portable(a) if a.startswith("/") else a for a in argv[1:]]
    return {"command": " ".join([prog, *args])}


# --------------------------------------------------------------------------- records


def device_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({_cpu_model_and_flags()[0]})"


# CPU flags that select kernel paths in MKL, oneDNN and ATen (and so the float32 summation order)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
# environment variables that change those kernel choices or the thread counts
KERNEL_ENV = ("MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "MKL_DYNAMIC", "MKL_NUM_THREADS", "ONEDNN_MAX_CPU_ISA",
              "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "OMP_DYNAMIC", "OMP_WAIT_POLICY")


@functools.lru_cache(maxsize=1)
def _cpu_model_and_flags() -> tuple[str, tuple[str, ...]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return model, tuple(f for f in CPU_FLAGS if f in flags)


def cpu_info() -> dict:
    """What decides a CPU run's float32 rounding: the CPU model and its flags, ATen's kernel capability,
    the environment that restricts MKL/oneDNN, and the thread counts of this process."""
    model, flags = _cpu_model_and_flags()
    return {"model": model, "flags": list(flags), "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}}


def versions() -> dict:
    out = {"python": sys.version.split()[0], "hafvt": hafvt.__version__, "torch": torch.__version__, "numpy": np.__version__}
    try:
        import open_clip

        out["open_clip"] = open_clip.__version__
    except ImportError:
        pass
    return out


def record(device: str | None = None, **extra) -> dict:
    """The common provenance record: commit, sources, invocation, device, versions, time (+ ``extra``)."""
    manifest = source_manifest()
    out = {**git_commit(), "source_hash": manifest_hash(manifest), "digest": DIGEST, **invocation()}
    if device is not None:
        out["device"] = device_name(device)
    out["cpu"] = cpu_info()
    out["loaded"] = loaded_sources()
    out.update(versions=versions(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra)
    out["sources"] = manifest  # last: long
    return out


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def run_provenance(scenario_dir: Path, cfg_dict: dict, cfg_hash: str, seed: int, device: str,
                   embedding_manifest: dict | None, candidate_files=()) -> dict:
    """The record of one training run (``hafvt.train.run``)."""
    from hafvt.data.c2dsr import data_hash
    from hafvt.data.labels import scenario_kind

    kind = scenario_kind(scenario_dir)
    emb = None
    if embedding_manifest is not None:
        emb = {k: v for k, v in embedding_manifest.items() if k != "cache"}
        emb["manifest_hash"] = hashlib.sha256(json.dumps(emb, sort_keys=True).encode()).hexdigest()[:16]
    return record(
        device,
        config_hash=cfg_hash, seed=seed, scenario=portable(scenario_dir),
        data_hash=data_hash(scenario_dir, candidate_files),
        candidates=[Path(f).relative_to(scenario_dir).as_posix() for f in candidate_files],
        data_kind=kind["kind"], data_label=kind["label"], comparable_with_paper=kind["kind"] == "benchmark",
        derived_from={k: kind[k] for k in ("source", "source_hash", "train_from", "train_fraction", "seed") if k in kind} or None,
        embeddings=emb, config=cfg_dict,
    )


# --------------------------------------------------------------------------- the check


def records_in(path: Path) -> list[dict]:
    """The provenance records a results file holds (a notebook: those of its provenance cells)."""
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text())
        return [o["metadata"][NOTEBOOK_KEY] for c in nb["cells"] if c["cell_type"] == "code"
                for o in c.get("outputs", []) if NOTEBOOK_KEY in o.get("metadata", {})]
    data = json.loads(path.read_text())
    if isinstance(data, dict) and isinstance(data.get("provenance"), dict):
        return [data["provenance"]]
    return []


# Modules that record, check or show results and compute none of their numbers, and hafvt/book.py, which
# only the notebooks import (for a notebook-made result every source counts).
NOT_NUMBERS = ("hafvt/provenance.py", "hafvt/commands/provenance.py", "hafvt/certify.py", "hafvt/probe.py", "hafvt/viz.py",
               "hafvt/verdict.py", "hafvt/widgets.py", "hafvt/book.py", "hafvt/fusion_weights.py")


def _changed(recorded: dict, current: dict, record: dict, uses_embeddings: bool = True) -> list[str]:
    """Source files that differ and determine the result's numbers. Every source counts for a result made
    in a notebook. For one made by the command line (``hafvt reproduce``, ``hafvt train``) the notebook
    sources, the scripts and ``NOT_NUMBERS`` do not, nor ``hafvt/embed/`` when it read no embedding cache;
    of the parameters files only the one it was run with (``parameters_file``) counts; and where the record
    lists the Python sources its process had imported (``loaded``), no other Python file counts."""
    in_notebook = "notebook" in record or str(record.get("command", "")).startswith("make notebooks")
    loaded = set(record["loaded"]) if isinstance(record.get("loaded"), list) else None

    def counts(f: str) -> bool:
        if in_notebook:
            return True
        if f.startswith("notebooks/"):
            return f == record.get("parameters_file")
        if f.endswith(".py") and loaded is not None and f not in loaded:
            return False
        return not (f.startswith("scripts/") or f in NOT_NUMBERS
                    or (f.startswith("hafvt/embed/") and not uses_embeddings))

    return sorted(f for f in set(recorded) | set(current) if recorded.get(f) != current.get(f) and counts(f))


def _uses_embeddings(data: dict) -> bool:
    """Whether a results file's numbers read an embedding cache: a run with embeddings, or a table with a
    finished row whose configuration uses image or title tables."""
    if isinstance(data.get("provenance"), dict) and "embeddings" in data["provenance"]:
        return data["provenance"]["embeddings"] is not None
    from hafvt.config import Config
    from hafvt.models import needs_tables

    def uses(cfg) -> bool:
        try:
            return needs_tables(Config(**cfg))
        except (TypeError, ValueError):  # keys or values of another version: count the embeddings in
            return True

    return any("resolved_config" not in r or uses(r["resolved_config"]) for r in data.get("rows", []) if r.get("seeds_done"))


def check(paths=None, root: Path = REPO) -> list[dict]:
    """Problems of the committed results under ``paths`` (default ``RESULTS``); empty = all current.

    Each problem: ``{"file", "problem", "changed"}``. A JSON or executed notebook must hold a provenance
    record whose sources are the current ones (``_changed`` says which sources count for which result); a ``.md``/``.tex`` table must equal what its
    ``.json`` renders to; no results file may hold an absolute path. Benchmarks (records with
    ``"kind": "benchmark"``) are dated measurements: they need a complete record but may be older.
    """
    current = _Current(root)
    at_commit: dict[tuple, dict | None] = {}  # (commit, scheme) -> its source manifest (None: not in this clone)
    from hafvt.certify import load_certificates

    certs = load_certificates(root)
    files = []
    for p in [Path(x) for x in (paths or [root / r for r in RESULTS])]:
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".json", ".ipynb", ".md", ".tex"))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such results file or folder")
    problems = []
    for f in files:
        rel = portable(f, root)
        if f.parent.name == "certificates" and f.suffix == ".json":  # not a result: valid, or reported
            bad = next((c["_problem"] for c in certs if c["_file"] == rel and c["_problem"]), None)
            problems += [{"file": rel, "problem": f"certificate rejected: {bad}", "changed": []}] if bad else []
            continue
        text = f.read_text(errors="replace")
        bad = ABSOLUTE.search(text)
        if bad:
            problems.append({"file": rel, "problem": f"holds an absolute path: {bad.group(0)[:80]}", "changed": []})
        if f.suffix in (".md", ".tex"):
            problems += _check_rendered(f, rel)
            continue
        try:
            recs = records_in(f)
            uses = True if f.suffix == ".ipynb" else _uses_embeddings(json.loads(text))
        except (json.JSONDecodeError, KeyError) as e:
            problems.append({"file": rel, "problem": f"unreadable: {e}", "changed": []})
            continue
        if not recs:
            problems.append({"file": rel, "problem": "no provenance record", "changed": []})
            continue
        for r in recs:
            problems += [{"file": rel, **p} for p in _record_problems(r, current, uses, at_commit, root, certs, rel)]
        if f.suffix == ".json":
            problems += [{"file": rel, "problem": p, "changed": []} for p in content_problems(f, json.loads(text))]
    return problems


def content_problems(path: Path, data: dict) -> list[str]:
    """Numbers of a results file that disagree with what the file says it made them from (a hand-edited
    metric): a run's metrics and validation numbers against its log at each domain's selected epoch; a
    table row's statistics against its runs' results files (where they are present)."""
    out = []
    if isinstance(data.get("history"), list) and isinstance(data.get("selected_epoch"), dict):
        for d, epoch in sorted(data["selected_epoch"].items()):
            at = next((h for h in data["history"] if h.get("epoch") == epoch), {})
            if at.get("test", {}).get(d) != data["metrics"]["sampled"][d] or \
                    at.get("valid", {}).get(d) != data["valid_at_selected"][d]["sampled"]:
                out.append(f"its {d} metrics are not those its log holds at the selected epoch {epoch} (edited by hand?)")
    from hafvt.config import Config

    known = set(Config.__dataclass_fields__)
    for r in data.get("rows", []) if isinstance(data.get("rows"), list) else []:
        unknown = sorted(set(r.get("resolved_config") or {}) - known)
        if unknown:
            out.append(f"row {r.get('row')}: its resolved config holds keys this hafvt does not know: {', '.join(unknown)}")
        runs = [path.parent / p for p in r.get("runs", [])]
        if not runs or not all(p.is_file() for p in runs):
            continue
        from hafvt.reproduce import _aggregate

        results = [json.loads(p.read_text()) for p in runs]
        for key in ("metrics", "metrics_average_ties"):
            if key in r and _aggregate(results, key) != r[key]:
                out.append(f"row {r['row']}: its {key} are not the statistics of its runs' results (edited by hand?)")
    return out


class _Current:
    """The current source manifest in each digest scheme, computed when first asked for."""

    def __init__(self, root: Path):
        self.root, self._m = root, {}

    def __call__(self, scheme: str = DIGEST) -> dict[str, str]:
        if scheme not in self._m:
            self._m[scheme] = source_manifest(self.root, scheme)
        return self._m[scheme]


def record_digest(r: dict) -> str:
    """sha256 (16 hex) of one provenance record: what a certificate names."""
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:16]


def _record_problems(r: dict, current: _Current, uses: bool, at_commit: dict, root: Path, certs=(), rel: str = "") -> list[dict]:
    """What is wrong with one provenance record: a missing field, sources that are not the current ones
    and no valid certificate that the current ones compute the same (stale), or a commit it names (not
    marked dirty) whose sources it does not hold."""
    missing = [k for k in ("commit", "source_hash", "sources", "created", "versions") if k not in r]
    if missing:
        return [{"problem": f"provenance lacks {', '.join(missing)}", "changed": []}]
    if scheme_of(r) not in SCHEMES:
        return [{"problem": f"unknown digest scheme {scheme_of(r)!r}", "changed": []}]
    out = []
    if manifest_hash(r["sources"]) != r["source_hash"]:
        out.append({"problem": f"its source hash {r['source_hash']} is not that of the sources it lists "
                               f"({manifest_hash(r['sources'])}): edited by hand?", "changed": []})
    changed, why = stale_sources(r, rel, uses, current, certs, root)
    if changed:
        out.append({"problem": f"stale: made by sources {r['source_hash']} at commit {str(r['commit'])[:10]}, "
                               f"current sources are {manifest_hash(current())}" + (f" ({why})" if why else ""),
                    "changed": changed})
    if r["commit"] and r.get("dirty") is not True:  # a clean record must hold its commit's sources
        key = (r["commit"], scheme_of(r))
        if key not in at_commit:
            at_commit[key] = manifest_at(r["commit"], root, scheme_of(r))
        theirs = at_commit[key]  # None: a commit this clone lacks, nothing to compare
        differ = sorted(k for k in set(theirs) | set(r["sources"]) if theirs.get(k) != r["sources"].get(k)) if theirs else []
        if differ:
            out.append({"problem": f"records commit {r['commit'][:10]} (not dirty) but its sources {r['source_hash']} "
                                   f"are not that commit's {manifest_hash(theirs)}", "changed": differ})
    return out


def stale_sources(r: dict, rel: str, uses: bool = True, current: "_Current | None" = None, certs=None,
                  root: Path = REPO) -> tuple[list[str], str]:
    """(the counted source files that differ from those record ``r`` of results file ``rel`` lists and that no
    valid certificate covers, why no certificate did); ``[]``: the record is current. Every file is compared,
    whatever its ``source_hash`` says."""
    current = current or _Current(root)
    if r.get("kind") == "benchmark":
        return [], ""
    changed = _changed(r["sources"], current(scheme_of(r)), r, uses)
    if not changed:
        return [], ""
    from hafvt.certify import certificate_for, load_certificates

    cert, why, since = certificate_for(r, rel, load_certificates(root) if certs is None else certs, current, uses)
    return ([], "") if cert is not None else (since or changed, why)


def _check_rendered(path: Path, rel: str) -> list[dict]:
    """A table's .md / .tex must be what its .json renders to (nobody edits them by hand)."""
    src = path.with_suffix(".json")
    if not src.is_file():
        return [] if path.name.lower() == "readme.md" else [{"file": rel, "problem": f"no {src.name} beside it", "changed": []}]
    from hafvt.reproduce import to_latex, to_markdown

    try:
        want = (to_markdown if path.suffix == ".md" else to_latex)(json.loads(src.read_text()))
    except (KeyError, TypeError, ValueError) as e:  # a table file of an older format
        return [{"file": rel, "problem": f"{src.name} no longer renders ({type(e).__name__}: {e}); regenerate it", "changed": []}]
    if path.read_text() != want:
        return [{"file": rel, "problem": f"differs from what {src.name} renders to (regenerate, do not edit)", "changed": []}]
    return []


def cmd_check(args) -> int:
    problems = check(args.paths or None)
    for p in problems:
        print(f"{p['file']}: {p['problem']}")
        if p["changed"]:
            print("    changed since: " + ", ".join(p["changed"][:20]) + (" ..." if len(p["changed"]) > 20 else ""))
    if problems:
        print(f"{len({p['file'] for p in problems})} results file(s) neither made by the current sources {source_hash()} "
              "nor certified for them; `hafvt provenance certify` where the code changed without changing what it "
              "computes, else regenerate them (make book; the command each table names)", file=sys.stderr)
        return 1
    print(f"every results file was made by the current sources ({source_hash()}) or certified for them")
    return 0
