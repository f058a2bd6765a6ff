"""Sphinx configuration for the sknn_kernels documentation.

Build (offline, warnings as errors; the gallery is rendered, not executed)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API reference is generated from the package itself: every public name
(``sknn_kernels.__all__`` and the ``__all__`` of each public first-level module or
subpackage) that imports at build time gets an autosummary stub, grouped by module
(see ``_write_api_tables`` below), so the reference never names an object that does
not exist and never misses one that does.
"""

import importlib
import inspect
import pkgutil
import re
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # build against the working tree, installed or not

import sknn_kernels

# -- Project information -----------------------------------------------------
project = "sknn_kernels"
author = "sknn_kernels developers"
copyright = "sknn_kernels developers"
release = sknn_kernels.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration ---------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "generated/*.rst.inc",
    "**.ipynb_checkpoints",
]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "literal"  # `x` renders as code, never as an unresolved cross-reference
nitpicky = False
pygments_style = "sphinx"
language = "en"

# autodoc / autosummary / numpydoc
autosummary_generate = True
autosummary_generate_overwrite = True
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
autodoc_inherit_docstrings = True
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
# Every numpydoc check but optional sections and two that fight the house style: GL08 (no
# docstring: private helpers), ES01/SA01/EX01 (extended summary, See Also, Examples are optional),
# RT02 (sklearn-style named returns, ``self : object``) and SS05 (it reads a summary that starts
# with a plural noun, "Indices of ...", as a third-person verb).
numpydoc_validation_checks = {"all", "GL08", "ES01", "SA01", "EX01", "RT02", "SS05"}
# No exclusions: every public docstring passes these checks, and a new one must too.
numpydoc_attributes_as_param_list = True

# No intersphinx: the build must work offline and never fetch inventories.

# MathJax is only needed by the reader's browser; the build itself is offline.
mathjax3_config = {"tex": {"macros": {"R": r"\mathbb{R}"}}}

# -- sphinx-gallery ----------------------------------------------------------
# The examples are *rendered*, not executed: they are run by the test suite instead.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "^$",  # execute nothing ...
    "plot_gallery": "False",  # ... and do not even try
    "download_all_examples": False,
    "doc_module": ("sknn_kernels",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"sknn_kernels": None},
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
    "show_signature": False,
}

# -- HTML output -------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sknn_kernels {release}"
html_static_path = []
html_show_sourcelink = False
html_theme_options = {
    "navbar_end": ["theme-switcher", "navbar-icon-links"],
    "icon_links": [],
    "show_prev_next": True,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}

# ---------------------------------------------------------------------------
# The API reference, generated from the package's public names.
# ---------------------------------------------------------------------------
#: Modules that are not API (documented as prose, or internal).
_API_SKIP_MODULES = {"sknn_kernels.app.cli", "sknn_kernels.__main__"}

#: Preferred order and titles of the submodule sections; any other public module
#: found in the package is appended after these, titled by its docstring.
_API_MODULE_TITLES = {
    "sknn_kernels.features.embedding": "Embeddings",
    "sknn_kernels.features.featurizer": "Neural tangent and related kernels",
    "sknn_kernels.features.probe": "PCA probes",
    "sknn_kernels.ntk": "Kernel engine (pure torch)",
    "sknn_kernels.metrics": "Faithfulness and neural-collapse metrics",
    "sknn_kernels.surrogates.surrogate": "Kernel surrogate classifier",
    "sknn_kernels.surrogates.regression": "Kernel surrogate regressor",
    "sknn_kernels.surrogates.neighbors": "Kernel nearest-centroid and nearest-neighbour classifiers",
    "sknn_kernels.attribution.influence": "Influence of training samples",
    "sknn_kernels.attribution.evaluation": "Attribution quality",
    "sknn_kernels.attribution.input_shares": "Which input drives the prediction",
    "sknn_kernels.attribution.branches": "Input branches of a network and their kernel shares",
    "sknn_kernels.analysis.variability": "Seed variability and the α-trimming level",
    "sknn_kernels.analysis.shift": "Two-sample tests for distribution shift",
    "sknn_kernels.analysis.spectral": "Kernel and weight spectra",
    "sknn_kernels.analysis.spectral_evolution": "Spectra across training checkpoints",
    "sknn_kernels.analysis.concepts": "Concepts in embedding space",
    "sknn_kernels.plotting": "Plotting",
    "sknn_kernels.app.compare": "Cross-validated surrogate comparison",
    "sknn_kernels.app.report": "The report of the main job",
    "sknn_kernels.datasets": "Data sets and reference networks",
    "sknn_kernels.text": "Text networks (the text extra)",
    "sknn_kernels.exceptions": "Warnings",
}


def _public_modules():
    """Public modules of sknn_kernels that import: its first-level modules and packages, and the
    public modules of the layer packages (``features``, ``surrogates``, ...) that export nothing
    themselves."""
    found = []
    names = []
    for info in pkgutil.iter_modules(sknn_kernels.__path__, "sknn_kernels."):
        names.append(info.name)
        package = importlib.import_module(info.name) if info.ispkg else None
        if package is not None and not hasattr(package, "__all__"):
            names += [m.name for m in pkgutil.iter_modules(package.__path__, info.name + ".")]
    for name in names:
        private = any(part.startswith("_") for part in name.split(".")[1:])
        if private or name in _API_SKIP_MODULES:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception as exc:
            print(
                f"[sknn_kernels docs] skipping {name}: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
            continue
        found.append(module)
    order = list(_API_MODULE_TITLES)
    found.sort(
        key=lambda m: (order.index(m.__name__) if m.__name__ in order else len(order), m.__name__)
    )
    return found


def _public_objects(module):
    """``(name, object)`` for the classes and functions in ``module.__all__``."""
    out = []
    for name in getattr(module, "__all__", ()):
        if name.startswith("_"):
            continue
        obj = getattr(module, name, None)
        if callable(obj) and not inspect.ismodule(obj):  # classes and functions
            out.append((name, obj))
    return out


def _kind(obj):
    from sklearn.base import ClassifierMixin, TransformerMixin

    if inspect.isclass(obj):
        if issubclass(obj, Warning) or issubclass(obj, Exception):
            return "Warnings and exceptions"
        if issubclass(obj, TransformerMixin):
            return "Transformers"
        if issubclass(obj, ClassifierMixin):
            return "Classifiers on kernels"
        return "Classes"
    return "Functions"


_API_NAMES = set()  # fully qualified names that get a stub page


def _table(current_module, names, template):
    _API_NAMES.update(f"{current_module}.{name}" for name in names)
    lines = [
        f".. currentmodule:: {current_module}",
        "",
        ".. autosummary::",
        "   :toctree: generated",
        f"   :template: {template}",
        "   :nosignatures:",
        "",
    ]
    lines += [f"   {name}" for name in names]
    return lines + [""]


def _first_line(doc):
    doc = inspect.cleandoc(doc or "").strip()
    return doc.split("\n\n", 1)[0].replace("\n", " ") if doc else ""


def _write_api_tables():
    """Write ``generated/api_tables.rst.inc`` (included by api.rst); return its path."""
    seen = set()
    lines = []

    top = _public_objects(sknn_kernels)
    groups = {}
    for name, obj in top:
        seen.add(id(obj))
        groups.setdefault(_kind(obj), []).append(name)
    lines += ["Top-level estimators and functions", "-" * 34, "", ".. module:: sknn_kernels", ""]
    lines += [
        (
            "Imported as ``from sknn_kernels import ...``; each is also reachable through "
            "its own module below."
        ),
        "",
    ]
    for kind in (
        "Transformers",
        "Classifiers on kernels",
        "Classes",
        "Functions",
        "Warnings and exceptions",
    ):
        if kind not in groups:
            continue
        lines += [kind, "~" * len(kind), ""]
        for template, names in _split_by_template(sknn_kernels, groups[kind]):
            lines += _table("sknn_kernels", names, template)

    for module in _public_modules():
        objects = [(n, o) for n, o in _public_objects(module) if id(o) not in seen]
        reexported = [n for n, o in _public_objects(module) if id(o) in seen]
        if not objects and not reexported:
            continue
        title = (
            _API_MODULE_TITLES.get(module.__name__)
            or _first_line(module.__doc__)
            or module.__name__
        )
        heading = f":mod:`{module.__name__}`: {title}"
        lines += [heading, "-" * len(heading), ""]
        lines += [f".. module:: {module.__name__}", ""]
        summary = _first_line(module.__doc__)
        if summary:
            lines += [_escape(summary), ""]
        if reexported:
            names = ", ".join(f":obj:`~sknn_kernels.{n}`" for n in reexported)
            lines += [f"Also defines {names} (listed above).", ""]
        if objects:
            for template, names in _split_by_template(module, [n for n, _ in objects]):
                lines += _table(module.__name__, names, template)
        for _, obj in objects:
            seen.add(id(obj))

    path = HERE / "generated" / "api_tables.rst.inc"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def _split_by_template(module, names):
    classes = [n for n in names if inspect.isclass(getattr(module, n))]
    functions = [n for n in names if n not in classes]
    out = []
    if classes:
        out.append(("class.rst", classes))
    if functions:
        out.append(("function.rst", functions))
    return out


def _escape(text):
    # Module docstrings are written for Python readers: keep them as plain text.
    return re.sub(r"([*_|\\])", r"\\\1", text)


_API_TABLES = _write_api_tables()


def _generate_api_stubs(app):
    """Create autosummary stubs for the names in the generated include file."""
    from sphinx.ext.autosummary.generate import generate_autosummary_docs

    for stale in (HERE / "generated").glob("*.rst"):  # names removed or moved since last build
        if stale.stem not in _API_NAMES:
            stale.unlink()
    generate_autosummary_docs(
        [str(_API_TABLES)],
        output_dir=str(HERE / "generated"),
        suffix=".rst",
        base_path=str(HERE),
        app=app,
        imported_members=False,
        overwrite=True,
    )


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Document only members written in sknn_kernels (not sklearn's inherited API)."""
    if skip or what != "class":
        return skip
    if re.fullmatch(r"set_\w+_request", name):
        return True  # sklearn's generated metadata-routing setters
    func = inspect.unwrap(getattr(obj, "fget", obj))
    module = getattr(func, "__module__", None) or ""
    if not module.startswith("sknn_kernels"):
        return True
    return None


#: A numpydoc parameter/attribute header line: ``name : type`` (or ``name1, name2 : type``).
_PARAM_LINE = re.compile(r"^(\s*[\w*][\w*, ]*\s:\s)(.+)$")
_SECTION_NAMES = {
    "Parameters",
    "Other Parameters",
    "Returns",
    "Yields",
    "Receives",
    "Attributes",
    "Raises",
    "Warns",
}


def _escape_param_types(app, what, name, obj, options, lines):
    """Keep sklearn-style types such as ``(n_features_in_,)`` or ``(n, *shape)`` literal.

    numpydoc copies the type text of ``name : type`` lines into reST, where a trailing
    underscore is a hyperlink reference and a leading ``*`` starts emphasis. Escape
    both in the header lines of parameter-like sections, before numpydoc runs.
    """
    section, indent = None, 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}:
            section, indent = stripped, len(line) - len(line.lstrip())
            continue
        if section not in _SECTION_NAMES or not stripped or set(stripped) == {"-"}:
            continue
        if len(line) - len(line.lstrip()) != indent:
            continue  # a description line
        match = _PARAM_LINE.match(line)
        if match:
            head, kind = match.groups()
            head = re.sub(r"^(\s*)\*", r"\1\\*", head)
        elif section in {"Returns", "Yields", "Receives"}:
            head, kind = line[: len(line) - len(line.lstrip())], line.lstrip()
        else:
            continue
        kind = re.sub(r"(?<=\w)_(?=[^\w]|$)", r"\\_", kind)
        kind = re.sub(r"\*(?=\w)", r"\\*", kind)
        lines[i] = head + kind


def _resolve_alias(app, env, node, contnode):
    """Resolve ``sknn_kernels.module.Name`` to wherever ``Name`` is documented.

    The API reference documents each object once, under its shortest public path
    (``sknn_kernels.Name`` when the package re-exports it). Prose can then refer to
    either spelling, and keeps working when a name is later re-exported at the top.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("sknn_kernels."):
        if "." in target:  # another package's name (sklearn, numpy...): leave it alone
            return None
        target = f"sknn_kernels.{target}"  # a bare name in a docstring: find it in the API
    parts = target.split(".")
    domain = env.get_domain("py")
    known = domain.objects
    modules = ["sknn_kernels", *_API_MODULE_TITLES]
    candidates = []
    for k in range(1, len(parts)):  # every "module . qualified name" split, longest name first
        tail = ".".join(parts[k:])
        candidates += [f"{module}.{tail}" for module in modules]
    for cand in candidates:
        if cand in known and cand != target:
            return domain.resolve_xref(
                env, node.get("refdoc"), app.builder, node.get("reftype"), cand, node, contnode
            )
    return None


def setup(app):
    app.connect("missing-reference", _resolve_alias)
    app.connect("builder-inited", _generate_api_stubs)
    app.connect("autodoc-process-docstring", _escape_param_types, priority=100)
    app.connect("autodoc-skip-member", _skip_foreign_members)


def _write_ntk_layers():
    """``generated/ntk_layers.rst.inc``: the NTK engine's per-layer rules, from its registry."""
    from sknn_kernels.ntk.rules import supported_layers_rst

    path = HERE / "generated" / "ntk_layers.rst.inc"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = supported_layers_rst()
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


_write_ntk_layers()
