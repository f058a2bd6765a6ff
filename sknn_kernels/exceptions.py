"""Warnings raised by sknn_kernels (errors are the standard ValueError/TypeError/NotFittedError)."""

__all__ = ["DeviceWarning", "NetworkChangedWarning", "SknnKernelsWarning"]


class SknnKernelsWarning(UserWarning):
    """Base class of the package's warnings."""


class DeviceWarning(SknnKernelsWarning):
    """A requested device is unavailable and another one is used instead."""


class NetworkChangedWarning(SknnKernelsWarning):
    """The network given to ``transform`` differs from the one seen at ``fit``."""
