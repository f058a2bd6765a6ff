"""sknn_kernels: scikit-learn features, neural tangent kernels and kernel surrogates for trained torch networks."""

from ._version import __version__
from .embedding import EmbeddingExtractor

__all__ = ["EmbeddingExtractor", "__version__"]
