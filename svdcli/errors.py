"""User-facing errors: raised anywhere, printed by the CLI as one clear message (no traceback)."""


class SvdError(RuntimeError):
    """An error whose message tells the user what went wrong and what to do."""


class MissingWeightsError(SvdError):
    """Model weights that are not on this machine; the message names what to fetch and where."""
