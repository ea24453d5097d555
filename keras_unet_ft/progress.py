"""Progress display, one for the whole package: a tqdm bar on a terminal (or in Jupyter),
whole plain lines in a log file, a cluster job's stderr or CI (never a carriage-return redraw).

At the bottom of the package's layers so that every stage, data loading and generation
included, shows progress the same way.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Optional


#: any value: no progress bars (set in shard processes, whose parent shows progress, and tests)
NO_PROGRESS_ENV = "UNET_FT_NO_PROGRESS"


def progress_wanted(progress: bool = True) -> bool:
    """Whether to draw a progress bar: asked for and not switched off by ``UNET_FT_NO_PROGRESS``."""
    return bool(progress) and not os.environ.get(NO_PROGRESS_ENV)


#: a plain progress line at most every this share of the total (when stderr is no terminal)
PLAIN_PROGRESS_STEP = 0.05


def _on_terminal(stream) -> bool:
    """Whether a redrawn bar suits ``stream``: a terminal, or a Jupyter kernel's output
    (tqdm.auto draws a widget there)."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):
        return False
    return "ipykernel" in sys.modules and type(stream).__module__.startswith("ipykernel")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class PlainProgress:
    """tqdm's interface (iterate, ``update``, ``set_postfix``, ``set_postfix_str``, ``close``,
    ``n``) writing whole lines, never a redraw: one line per finished item, or per
    :data:`PLAIN_PROGRESS_STEP` of the total when there are more than 20, and one at the end
    (a log file, a cluster job's stderr, CI). Without a total: at 1, 2, 5, 10, 20, 50... items."""

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it",
                 initial: int = 0, stream=None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start_n = int(initial)
        self.stream = stream
        self.postfix = ""
        self._start = time.perf_counter()
        self._printed = self.n
        self._closed = False
        self._next = self._after(self.n)

    def _after(self, n: int) -> int:
        """The count at which the next line is due."""
        if self.total:
            step = max(1, math.ceil(self.total * PLAIN_PROGRESS_STEP))
            return (n // step + 1) * step
        k = 1
        while k <= n:
            k = k * 5 // 2 if str(k)[0] == "2" else k * 2
        return k

    def _line(self) -> str:
        elapsed = time.perf_counter() - self._start
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        parts = [f"{count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f} %)"
        parts.append(f"{_clock(elapsed)} elapsed")
        done = self.n - self._start_n
        if self.total and 0 < done and self.n < self.total:
            parts.append(f"~{_clock(elapsed / done * (self.total - self.n))} left")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def _write(self) -> None:
        print(self._line(), file=self.stream or sys.stderr, flush=True)
        self._printed = self.n

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        if self.n >= self._next and (self.total is None or self.n < self.total):
            self._write()
        if self.n >= self._next:
            self._next = self._after(self.n)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        """Nothing: a line is written when progress is made."""

    def write(self, s: str) -> None:
        print(s, file=self.stream or sys.stderr, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._printed or self.n == self._start_n:
                self._write()

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(iterable=None, *, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False,
                 leave: bool = True, stream=None):
    """The package's one progress display: a tqdm bar where stderr is a terminal (or a
    Jupyter kernel's output), else :class:`PlainProgress` lines; nothing with ``disable``.
    Used like ``tqdm`` (``for x in progress_bar(xs, desc=...)``, ``update``,
    ``set_postfix``, ``close``).

    Examples:
        >>> import io
        >>> log = io.StringIO()
        >>> for _ in progress_bar(range(3), desc="runs", unit="run", stream=log):
        ...     pass
        >>> print(log.getvalue().replace("0:00 elapsed", "T"), end="")  # doctest: +ELLIPSIS
        runs: 1/3 run (33 %), T, ~0:00 left
        runs: 2/3 run (67 %), T, ~0:00 left
        runs: 3/3 run (100 %), T
    """
    from tqdm.auto import tqdm

    out = stream if stream is not None else sys.stderr
    if disable or _on_terminal(out):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial,
                    disable=disable, leave=leave, file=stream)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial,
                         stream=stream)
