"""Fixtures of the deploy tests: the same live server and manifest as tests/loadtests (started once per session)."""

from tests.loadtests.live import bench_manifest, live_server  # noqa: F401
from tests.server.conftest import model_pair  # noqa: F401
