"""The ``sknn-kernels`` command line. Thin: it only composes the public API."""

import argparse

from ._version import __version__

__all__ = ["main", "build_parser"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="sknn-kernels",
        description=(
            "Turn a trained PyTorch network into scikit-learn features and neural tangent "
            "kernels, and fit faithful kernel surrogate models."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sknn-kernels {__version__}")
    return parser


def main(argv=None):
    """Entry point of the ``sknn-kernels`` console script; returns the exit code."""
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
