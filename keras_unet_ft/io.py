"""Files written atomically (a reader never sees half a file) and read back plainly.

Every result file of a study goes through :func:`atomic_write`: the content goes to a
temporary file in the same folder, which is renamed over the target, so a study
killed at any moment leaves either the old file or the new one. Files get the
permissions of an ordinary ``open()`` (umask), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import tempfile
from typing import Any, Callable, Iterable, List, Optional, Sequence

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[str], None], suffix: str = ".tmp") -> None:
    """Call ``write(temporary_path)``, then rename the result over ``path`` (parents made).

    ``suffix`` is the temporary file's ending, for writers that go by it (``.npz``,
    ``.keras``). On any error the temporary file is removed and ``path`` is untouched.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: pathlib.Path(tmp).write_text(text))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path, data: Any) -> None:
    """JSON atomically; NumPy numbers and arrays are written as plain numbers and lists."""
    atomic_write_text(path, json.dumps(data, indent=1, default=_json_default))


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
    save = np.savez_compressed if compress else np.savez
    atomic_write(path, lambda tmp: save(tmp, **arrays), suffix=".npz")
