"""Fixtures the prune_tools tests share with others: the tiny model pair and the small benchmark manifest."""

from tests.loadtests.live import bench_manifest  # noqa: F401  (3 espeak-ng clips with en/fr/de references)
from tests.server.conftest import model_pair  # noqa: F401  (tiny pruned + base, production builders)
