"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

``atomic_path(path)`` gives a temporary path beside ``path`` to write to; when the block ends
without an exception the file is renamed over ``path`` (``os.replace``, atomic on POSIX), and
otherwise it is removed. Every writer in the package goes through it.
"""
import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text_atomic(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path, obj, indent: int = 2, sort_keys: bool = False) -> None:
    """``obj`` as indented JSON at ``path``, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def sha1_file(path) -> str:
    """SHA-1 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
