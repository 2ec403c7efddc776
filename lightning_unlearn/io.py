"""Filesystem helpers: atomic output directories and files.

An unlearning job that crashes while writing must leave the previous output untouched, so every
output is first written to a temporary sibling and renamed into place (:func:`replace_path`, the
one place a finished folder is swapped in): one folder (:func:`atomic_directory`), one file
(:func:`atomic_write_text`) or everything a run publishes at once (:func:`staged_outputs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class OutputExistsError(FileExistsError):
    """The output path exists and overwriting was not asked for."""


def check_output_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse a non-empty existing output directory unless ``overwrite`` is set."""
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(
            f"output directory '{out}' already exists and is not empty; pass --overwrite "
            "(overwrite=True) to replace it or choose another directory"
        )
    return out


def replace_path(source: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move ``source`` (a file or folder) to ``final``, replacing what is there.

    A folder in the way is first renamed aside and removed only after ``source`` is in place, so
    ``final`` is at every moment either the old or the new content, never a mix.
    """
    source, final = Path(source), Path(final)
    if final.is_dir() and not final.is_symlink():
        backup = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        backup.rmdir()
        os.replace(final, backup)
        os.replace(source, final)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(source, final)
    return final


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block finishes.

    On an exception the temporary directory is removed and ``path`` is left as it was.
    """
    final = Path(path)
    if final.exists() and not overwrite:
        check_output_dir(final, overwrite=False)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    _umask = os.umask(0)
    os.umask(_umask)
    os.chmod(tmp, 0o777 & ~_umask)
    try:
        yield tmp
        replace_path(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staged_outputs(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden staging folder inside ``out_dir``; move what it holds into place at the end.

    Everything a run publishes (the exported model, the report files) is written into the
    staging folder first. Only when the block finishes is each entry moved over its counterpart
    in ``out_dir`` (:func:`replace_path`). An exception inside the block -- a crash half way
    through the export -- removes the staging folder and leaves every previous output untouched.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        yield staging
        for entry in sorted(staging.iterdir()):
            replace_path(entry, out / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file through a temporary file and ``os.replace``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; reports are ordinary files
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return final


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


#: the files of a checkpoint folder whose bytes decide a model's outputs
_MODEL_FILES = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "config.json")


def content_fingerprint(path: str | os.PathLike, *, memo: str | os.PathLike | None = None):
    """SHA-256 of a model's bytes: a file (GGUF), or a checkpoint folder's weight files and
    ``config.json``; ``None`` when ``path`` is neither (a hub id).

    Each file's hash is remembered in ``memo`` (a JSON file) under its path, size, inode and
    modification time, so an unchanged file is hashed once; a file written again (in place or
    replaced) has another size, inode or time and is hashed anew.
    """
    import hashlib

    target = Path(path)
    if target.is_dir():
        files = sorted({f for pattern in _MODEL_FILES for f in target.glob(pattern) if f.is_file()})
    elif target.is_file():
        files = [target]
    else:
        return None
    known: dict[str, str] = {}
    memo_path = None if memo is None else Path(memo)
    if memo_path is not None and memo_path.is_file():
        try:
            known = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            known = {}
    total, changed = hashlib.sha256(), False
    for file in files:
        stat = file.stat()
        stamp = f"{file.resolve()}:{stat.st_size}:{stat.st_ino}:{stat.st_mtime_ns}"
        digest = known.get(stamp)
        if digest is None:
            h = hashlib.sha256()
            with open(file, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    h.update(block)
            digest = known[stamp] = h.hexdigest()
            changed = True
        total.update(f"{file.name}:{digest}\n".encode())
    if changed and memo_path is not None:
        atomic_write_json(memo_path, known)
    return total.hexdigest()
