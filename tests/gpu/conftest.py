"""GPU tier (``pytest -m gpu``): skipped where torch sees no CUDA device. The tiny model pair and the small
benchmark manifest are the CPU tests' own fixtures."""

import pytest
import torch

from tests.loadtests.live import bench_manifest  # noqa: F401  (3 espeak-ng clips with en/fr/de references)
from tests.server.conftest import model_pair  # noqa: F401  (tiny pruned + base, production builders)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device: the gpu tier runs on a GPU machine (scripts/gpu_check.sh)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
