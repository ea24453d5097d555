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

from .exitcodes import UserError


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
        raise UserError(f"{path} is not valid JSON ({e}); delete it to have it rewritten") from None


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


# -- locks ---------------------------------------------------------------------------------
try:
    import fcntl
    _EX, _SH, _NB = fcntl.LOCK_EX, fcntl.LOCK_SH, fcntl.LOCK_NB
except ImportError:   # pragma: no cover - Windows: no guard there
    fcntl, _EX, _SH, _NB = None, 2, 1, 4


def _flock(f, how: int) -> bool:
    """``fcntl.flock``; True when taken, False when a non-blocking attempt finds it held.
    Where ``fcntl`` is missing (Windows) every lock is taken at once: no guard there."""
    if fcntl is None:   # pragma: no cover
        return True
    try:
        fcntl.flock(f.fileno(), how)
        return True
    except BlockingIOError:
        return False


class FileLock:
    """An exclusive lock on ``path`` (a file beside what it guards) for the ``with`` block;
    the operating system releases it when the process ends, even on ``kill -9``, so a lock is
    never left stale.

    Examples:
        >>> with FileLock("/tmp/example.lock"):   # doctest: +SKIP
        ...     pass   # one process at a time here
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a+")
        _flock(self._f, _EX)
        return self

    def __exit__(self, *exc):
        self._f.close()   # closing the file releases the lock
        return False


#: the open lock files of this process and their content, kept open (so held), by path
_HELD: dict = {}


def hold_shared(path, content: str) -> Optional[str]:
    """Hold a lock on ``path`` shared by every process that brings the same ``content`` (a
    study's config, as text) for the rest of this process's life. Returns None when held, or
    the other ``content`` of a live process holding it (the caller refuses to go on).

    The first process takes the lock exclusively, writes its content, then shares it; a
    later one shares it when the content is the same; a process that died holds nothing,
    so its content is replaced."""
    path = pathlib.Path(path).resolve()
    held = _HELD.get(str(path))
    if held is not None:
        if held[1] == content:
            return None
        release(path)   # this process moves on to another config: taken anew below
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    if _flock(f, _EX | _NB):   # no live holder: the content is ours
        f.seek(0)
        f.truncate()
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
        _flock(f, _SH)                    # from exclusive to shared
    else:                                           # live holders: same content?
        _flock(f, _SH)                    # waits for a writer to finish
        f.seek(0)
        theirs = f.read()
        if theirs != content:
            f.close()
            return theirs
    _HELD[str(path)] = (f, content)
    return None


def release(path) -> None:
    """Give up a lock taken with :func:`hold_shared` (tests; a process that goes on to
    other folders)."""
    held = _HELD.pop(str(pathlib.Path(path).resolve()), None)
    if held is not None:
        held[0].close()


def discard_shared(path, remove: bool = True) -> None:
    """Give up a lock taken with :func:`hold_shared` and, with ``remove``, delete its file
    when no other live process holds it (a study that failed before writing anything leaves
    no lock behind); a file another process holds stays."""
    path = pathlib.Path(path)
    release(path)
    if not remove or not path.exists():
        return
    with open(path, "a+") as f:
        if _flock(f, _EX | _NB):   # nobody else holds it: the file is ours to delete
            path.unlink(missing_ok=True)

