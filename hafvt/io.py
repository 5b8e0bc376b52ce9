"""Atomic writes: a cache or result file is either the old one or the whole new one.

A writer killed mid-write leaves at most its temporary file (``.NAME.<8 random characters>.tmp``) beside the
target; ``remove_stale_temps`` removes those of a folder when the command that owns it starts
again. Logs grow by whole lines (``append_line``); ``hafvt.viz.read_jsonl`` drops a torn last line.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

# what atomic_write_bytes names its temporary files: "." + target name + "." + mkstemp's 8 characters + ".tmp"
TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (only files named as
    ``atomic_write_bytes`` names them); call it where the one command that owns the folder starts."""
    found = [p for p in Path(folder).glob(".*.tmp") if p.is_file() and TEMP_FILE.match(p.name)]
    for p in found:
        p.unlink(missing_ok=True)
    return found


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one whole line (one ``write``, then fsync): a kill leaves the file as it was or one torn
    last line, which ``hafvt.viz.read_jsonl`` drops."""
    assert "\n" not in line
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(path: str | os.PathLike, obj) -> Path:
    """``torch.save`` through a temporary file: a checkpoint is never half-written."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, what: str):
    """Hold ``folder/.lock`` (``flock``) while the block writes into ``folder``: a second process that asks
    for it gets a ValueError naming the holder instead of writing the same files at once. The lock goes
    with its process, so a killed holder leaves none behind; the file is removed on release."""
    import fcntl

    path = Path(folder) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ValueError(f"{path.parent} is in use by {holder}; wait for it to finish or use another folder") from None
    if not (path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino):  # its holder removed it meanwhile
        os.close(fd)
        raise ValueError(f"{path.parent} was in use by another process a moment ago; run the command again")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{what} (pid {os.getpid()})".encode())
        yield path
    finally:
        os.unlink(path)
        os.close(fd)
