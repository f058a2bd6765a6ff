"""sknn_kernels: scikit-learn features, neural tangent kernels and kernel surrogates for trained torch networks.

Public estimators live at the top level; kernels of the NTK family are computed by
:mod:`sknn_kernels.ntk` (pure torch); metrics, spectra, plots and data sets have their own
submodules.
"""

from . import evaluation, metrics
from ._version import __version__
from .compare import compare_surrogates, make_surrogate_pipeline
from .embedding import EmbeddingExtractor
from .featurizer import NTKFeaturizer
from .influence import InfluenceAttributor
from .neighbors import KernelKNeighborsClassifier, KernelNearestCentroid
from .probe import PCAProbe
from .regression import KernelSurrogateRegressor
from .surrogate import KernelSurrogateClassifier

__all__ = [
    "EmbeddingExtractor",
    "InfluenceAttributor",
    "KernelKNeighborsClassifier",
    "KernelNearestCentroid",
    "KernelSurrogateClassifier",
    "KernelSurrogateRegressor",
    "NTKFeaturizer",
    "PCAProbe",
    "__version__",
    "compare_surrogates",
    "evaluation",
    "make_surrogate_pipeline",
    "metrics",
]
