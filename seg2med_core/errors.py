"""User-facing errors: one line naming the offending file or value."""


class Seg2MedError(ValueError):
    """Bad input or configuration; the message is shown to the user as one line."""


class Cancelled(RuntimeError):
    """Raised when a long operation is cancelled through its ``cancel`` callback."""
