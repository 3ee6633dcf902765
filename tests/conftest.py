"""Shared pytest set-up: the `slow` marker (run with --runslow), one-thread runs, and the fixtures several test files use."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def one_thread():
    """One torch CPU thread for the module: small networks on a shared 2-core machine run several times
    faster on one thread than on two. Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def layers():
    "The pair of PCA MANO layers of the processed data, built from random MANO-format models (no licensed files)."
    from intaghand.fixtures import random_mano_layers
    return random_mano_layers(0)


@pytest.fixture(scope="module")
def assets():
    "Made-up graph assets with the official sizes (63…1008 GCN vertices, 778 mesh vertices)."
    from intaghand.fixtures import make_synthetic_graph_assets
    return make_synthetic_graph_assets()


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long test, run only with --runslow")
    for var, sub in [("JUPYTER_CONFIG_DIR", "jupyter/config"), ("JUPYTER_DATA_DIR", "jupyter/data"),
                     ("IPYTHONDIR", "ipython"), ("MPLCONFIGDIR", "matplotlib")]:
        p = ROOT / ".cache" / sub
        p.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault(var, str(p))


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
