"""Files written atomically (a reader never sees half a file) and read back plainly.

Every result file of a study goes through these functions: a write goes to a
temporary file in the same folder and is renamed over the target, so a study
killed at any moment leaves either the old file or the new one. Files are
created with the permissions of an ordinary ``open()`` (umask), not 0600.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import tempfile
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace(tmp: str, path: pathlib.Path) -> None:
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (parents created)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        _replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def read_json(path) -> Any:
    """JSON of ``path``; a broken file is an error naming the file."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it to have it rewritten") from None


def write_csv(path, rows: Iterable[dict], fieldnames: Optional[Sequence[str]] = None) -> None:
    """Write dict rows as CSV atomically (columns: ``fieldnames`` or the first row's keys)."""
    rows = list(rows)
    fieldnames = list(fieldnames or (list(rows[0].keys()) if rows else []))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def read_csv(path) -> List[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def atomic_savez(path, compress: bool = True, **arrays) -> None:
    """``np.savez_compressed`` (or ``np.savez``) atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npz")
    os.close(fd)
    try:
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)
        _replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
