"""The documentation builds offline with warnings as errors (the examples are not run here)."""

import importlib
import importlib.util
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NEEDED = ("sphinx", "numpydoc", "sphinx_gallery", "pydata_sphinx_theme")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(name) is None for name in NEEDED),
        reason="the docs extra is not installed (pip install -e '.[docs]')",
    ),
]


def test_docs_build_without_warnings(tmp_path):
    """``python -m sphinx -W --keep-going -b html docs <tmp>`` passes, in well under a minute."""
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-E",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, (
        f"sphinx failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    )
    html = tmp_path / "html"
    for page in (
        "index",
        "install",
        "getting_started",
        "api",
        "user_guide/index",
        "auto_examples/index",
    ):
        assert (html / f"{page}.html").is_file(), page
    assert seconds < 300, f"docs build took {seconds:.0f} s"


def test_api_reference_lists_every_public_name():
    """Every name in ``__all__`` of the package and its public modules has an API page."""
    import sknn_kernels

    sys.path.insert(0, str(DOCS))
    try:
        spec = importlib.util.spec_from_file_location("_sknn_docs_conf", DOCS / "conf.py")
        conf = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(conf)
    finally:
        sys.path.remove(str(DOCS))
    text = conf._API_TABLES.read_text(encoding="utf-8")
    listed = {
        line.strip()
        for line in text.splitlines()
        if line.startswith("   ") and not line.strip().startswith(":")
    }
    for name, _obj in conf._public_objects(sknn_kernels):
        assert name in listed, name
    # every public module at any depth, found independently of conf.py's own module list (a layer
    # package's modules must not drop out of the reference when the package moves them down a level)
    for info in pkgutil.walk_packages(sknn_kernels.__path__, "sknn_kernels."):
        private = any(part.startswith("_") for part in info.name.split(".")[1:])
        if private or info.name in conf._API_SKIP_MODULES or info.name in _EXTENSION_APIS:
            continue
        for name, _obj in conf._public_objects(importlib.import_module(info.name)):
            assert name in listed, f"{info.name}.{name}"


# The layer-rule registry is an extension point documented in the user guide's prose.
_EXTENSION_APIS = {"sknn_kernels.ntk.rules"}


def test_shared_ntk_parameter_docs_are_filled_in():
    """Every ``%(name)s`` placeholder of the NTK docstrings is replaced, at its indentation."""
    import inspect

    import sknn_kernels.ntk as ntk

    objects = [getattr(ntk, name) for name in ntk.__all__ if callable(getattr(ntk, name))]
    objects += [ntk.NTKEngine.kernel, ntk.NTKEngine.diagonal, ntk.NTKEngine.projected_features]
    for obj in objects:
        doc = inspect.getdoc(obj)
        assert "%(" not in doc, obj
    doc = inspect.getdoc(ntk.NTKEngine.diagonal)
    assert "\ny : array-like of int of shape (n,), default=None\n    Class indices" in doc
