"""The load test's one error class: bad input (a flag, a manifest, a server that is not there or not ready).

``slimspeech loadtest`` prints it as one ``error: ...`` line and exits 2 (``loadtests.run.main``), as
every verb does with ``speechllm.errors.SlimError``. loadtests has its own class because it imports
nothing of ours: it reaches the server over HTTP only (tests/test_boundaries.py).
"""


class LoadTestError(ValueError):
    """A message that names the problem and its fix; ``param``: the flag it is about, if any."""

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.param = param
