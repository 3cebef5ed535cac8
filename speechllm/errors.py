"""User-facing errors: each message names the problem and the fix in one line.

The CLI prints ``error: <message>`` and exits 2; the server maps them to 4xx in
the OpenAI error envelope. Anything that is not a ``SlimError`` is a bug.
"""


class SlimError(ValueError):
    """Base of every error caused by the caller's input (file, flag, request field)."""

    #: OpenAI-envelope ``param`` the error is about (a form field or CLI flag), if any.
    param: str | None = None
    #: HTTP status the server answers with.
    status_code: int = 400

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        if param is not None:
            self.param = param


class AudioError(SlimError):
    """Audio that cannot be used: missing, undecodable, empty, non-finite or too long."""

    param = "file"


class TaskError(SlimError):
    """An unknown task or target language for this model."""

    param = "task"


class ModelDirError(SlimError):
    """A model directory that is missing, incomplete or of an unknown format."""

    param = "model"
    status_code = 404
