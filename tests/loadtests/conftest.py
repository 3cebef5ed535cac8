"""Fixtures of the load-test tests: the server tests' tiny model pair, one shared live server, a small manifest."""

from tests.server.conftest import model_pair  # noqa: F401  (tiny pruned + base, built with the production builders)

from .live import bench_manifest, live_server  # noqa: F401
