"""The package's one progress helper: a bar on a terminal, a few plain lines in a log.

``verbose`` follows scikit-learn: ``0``/``False`` shows nothing, ``1`` one bar for the outer
loop, higher values let inner levels (e.g. kernel tiles) show theirs. On a terminal the bar is
tqdm's (a dependency of skorch) and inner bars vanish when done (``leave=False``), so there is
one bar per level on screen. When the stream is not a terminal (a log file, CI), a bar would
print dozens of carriage-return updates: it prints at most ~10 short lines instead.
"""

import sys
import time

__all__ = ["ProgressBar", "progress"]

_LOG_STEPS = 10  # lines per bar in a log, besides the last


class ProgressBar:
    """A progress bar over ``total`` steps; a no-op when ``verbose`` is falsy.

    Parameters
    ----------
    total : int
    desc : str
        What is counted, shown first.
    unit : str, default="it"
    verbose : bool or int, default=1
        ``0``/``False``: silent.
    leave : bool, default=True
        Keep the bar on screen when done (outer levels); inner levels pass ``False``.
    file : text stream, default=None
        ``sys.stderr`` when None.
    """

    def __init__(self, total, desc, *, unit="it", verbose=1, leave=True, file=None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.file = sys.stderr if file is None else file
        self.done, self._bar, self._logged = 0, None, -1
        self._start = time.perf_counter()
        self.enabled = bool(verbose)
        if not self.enabled:
            return
        if _isatty(self.file):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, leave=leave, file=self.file)
        else:
            self._log("")

    def update(self, n=1, **postfix):
        """Advance by ``n`` steps; ``postfix`` values (e.g. ``loss="0.31"``) are shown after."""
        self.done += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
        elif self.enabled:
            step = self.done * _LOG_STEPS // max(self.total, 1)
            if step > self._logged or self.done >= self.total:
                self._log(", ".join(f"{k} {v}" for k, v in postfix.items()))

    def close(self):
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _log(self, extra):
        self._logged = self.done * _LOG_STEPS // max(self.total, 1)
        seconds = time.perf_counter() - self._start
        line = f"{self.desc}: {self.done}/{self.total} {self.unit} ({seconds:.1f} s)"
        print(line + (f", {extra}" if extra else ""), file=self.file, flush=True)


def progress(iterable, desc, *, total=None, unit="it", verbose=1, leave=True, file=None):
    """Iterate over ``iterable`` with a :class:`ProgressBar` (``total`` defaults to its length).

    Returns
    -------
    iterator
        The items of ``iterable``, in order.
    """
    total = len(iterable) if total is None else total
    with ProgressBar(total, desc, unit=unit, verbose=verbose, leave=leave, file=file) as bar:
        for item in iterable:
            yield item
            bar.update()


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams (pytest's capture)
        return False
