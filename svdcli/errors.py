"""User-facing errors: raised anywhere, printed by the CLI as one clear message (no traceback).

Exit codes (README, "When things go wrong"): an SvdError exits 2 (a bad setting, path, file or
disk: nothing of this run's output is trusted), a RunFailed 1 (the command ran and wrote its
rows, but too many inputs failed), an interruption 130 (Ctrl-C) or 143 (SIGTERM).
"""


class SvdError(RuntimeError):
    """An error whose message tells the user what went wrong and what to do."""

    exit_code = 2


class RunFailed(SvdError):
    """The command ran to its end and wrote its rows, but its outcome is a failure: no input gave
    a clip (or a sample), or more failed than --max-error-rate allows."""

    exit_code = 1


class MissingWeightsError(SvdError):
    """Model weights that are not on this machine; the message names what to fetch and where."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so the same clean-up runs
    (finished work flushed, part files kept); the CLI exits 143 instead of 130."""
