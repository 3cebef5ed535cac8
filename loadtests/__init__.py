"""loadtests: load generator and side-by-side reports of served models, over the HTTP API only (httpx).

Imports nothing of ours (tests/test_boundaries.py): what it needs to know of a model (decoder layers,
parameters, weight bytes) comes from the server's ``GET /v1/models``, the clips are files read as
bytes. The offline, in-process comparison of two model dirs is ``slimspeech compare``
(``prune_tools.report``). Run: ``slimspeech loadtest --help``; Locust: ``loadtests/locustfile.py``.
"""
