"""Shared pytest fixtures; the test networks themselves live in ``_nets.py``."""

import numpy as np
import pytest
import torch
from _nets import make_cnn_bn, make_mlp, make_shared_weights_net, make_transformer


@pytest.fixture
def one_torch_thread():
    """Tiny networks gain nothing from threads, and OpenMP spinning on a busy machine costs 50x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def mlp():
    return make_mlp()


@pytest.fixture
def cnn_bn():
    return make_cnn_bn()


@pytest.fixture
def transformer():
    return make_transformer()


@pytest.fixture
def shared_weights_net():
    return make_shared_weights_net()
