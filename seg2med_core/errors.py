"""User-facing errors: one line naming the offending file or value."""


class Seg2MedError(ValueError):
    """Bad input or configuration; the message is shown to the user as one line."""


class Cancelled(RuntimeError):
    """Raised when a long operation is cancelled through its ``cancel`` callback."""


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (a GUI's first step on Cancel).

    A ``BaseException`` so that ``except Exception`` handlers do not swallow it; temporary files are
    removed on the way out like for :class:`Cancelled`, and the command line exits with 143.
    """
