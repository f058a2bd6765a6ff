"""The one progress helper: a tqdm bar on a terminal, a few plain lines in a log, nothing at 0."""

import io

from sknn_kernels._progress import ProgressBar, progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_gets_few_plain_lines():
    log = io.StringIO()
    assert list(progress(range(100), "tiles", unit="tile", file=log)) == list(range(100))
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()  # no carriage-return redraws in a log file
    assert 2 <= len(lines) <= 12
    assert lines[0].startswith("tiles: 0/100 tile") and lines[-1].startswith("tiles: 100/100 tile")


def test_silent_at_verbose_0_and_a_bar_on_a_terminal():
    quiet = io.StringIO()
    with ProgressBar(5, "training", verbose=0, file=quiet) as bar:
        for _ in range(5):
            bar.update(loss="0.1")
    assert quiet.getvalue() == ""
    terminal = _Terminal()
    with ProgressBar(3, "training", unit="epoch", file=terminal) as bar:
        for _ in range(3):
            bar.update(loss="0.5")
    assert "3/3" in terminal.getvalue() and "loss=0.5" in terminal.getvalue()
    log = io.StringIO()
    with ProgressBar(2, "training", unit="epoch", file=log) as bar:
        bar.update(loss="0.25")
    assert "training: 1/2 epoch" in log.getvalue() and "loss 0.25" in log.getvalue()
