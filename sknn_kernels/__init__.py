"""sknn_kernels: scikit-learn features, neural tangent kernels and kernel surrogates for trained torch networks.

The subpackages follow the data flow, each importing only from the ones before it:
:mod:`~sknn_kernels.network` (holding and calling the network) -> :mod:`sknn_kernels.ntk` (kernels,
pure torch) -> :mod:`~sknn_kernels.features` (the transformers) -> :mod:`sknn_kernels.metrics` ->
:mod:`~sknn_kernels.surrogates` (estimators on kernels) -> :mod:`~sknn_kernels.attribution` and
:mod:`~sknn_kernels.analysis` -> :mod:`sknn_kernels.plotting` -> :mod:`~sknn_kernels.app` (the main
job). Every public estimator and function is importable from the top level or its module.
"""

from . import metrics
from ._version import __version__
from .app.compare import compare_surrogates, make_surrogate_pipeline
from .attribution import evaluation
from .attribution.influence import InfluenceAttributor
from .attribution.input_shares import InputShares
from .features.embedding import EmbeddingExtractor
from .features.featurizer import NTKFeaturizer
from .features.probe import PCAProbe
from .surrogates.neighbors import KernelKNeighborsClassifier, KernelNearestCentroid
from .surrogates.regression import KernelSurrogateRegressor
from .surrogates.surrogate import KernelSurrogateClassifier

__all__ = [
    "EmbeddingExtractor",
    "InfluenceAttributor",
    "InputShares",
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
