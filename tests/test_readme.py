"""The README's usage example runs as written, and its test command is the one CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    probe = float(out.split("probe accuracy:")[1].split()[0])
    accuracy = float(out.split("surrogate accuracy:")[1].split()[0])
    tau = float(out.split("Kendall tau:")[1].split()[0])
    assert probe > 0.9 and accuracy > 0.9 and 0.3 < tau <= 1
    assert "top proponents:" in out


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python -m pytest -q"
    assert command in readme and command in ci
