"""Whether a finished stage run succeeded: the check behind exit code 1.

A stage writes a row for every input, failed ones included (cuts: status 'error'; the scoring
stages: `<stage>_error`), so nothing is lost. Then the run is judged on its manifest: it fails
(RunFailed, exit 1, its rows already written) when no input gave a result (cuts: no clip; a
scoring stage: every clip failed; one with no clip to score fails nothing), or when more inputs
failed than `max_error_rate` allows (`--max-error-rate`, a recipe's `max_error_rate`; the
default 1.0 fails only a run where nothing worked). A short video is no failure: its row says
'short', and a run of short videos only fails for giving no clip.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from svdcli.errors import RunFailed, SvdError

DEFAULT_MAX_ERROR_RATE = 1.0


@dataclass(frozen=True)
class Outcome:
    """What a stage's manifest says about its run."""

    stage: str
    units: int  # the inputs judged: videos (cuts), ok clips (scoring stages)
    unit: str
    failed: int
    produced: int  # clips (cuts), clips scored (scoring stages)
    example: str | None  # the first failure, "where: why"
    short: int = 0  # cuts: pieces below min_length (not failures)

    @property
    def rate(self) -> float:
        return self.failed / self.units if self.units else 0.0


def check_rate(value: float, where: str = "--max-error-rate") -> float:
    """A max error rate is a fraction of the inputs, 0 (no failure allowed) to 1 (any)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise SvdError(f"{where} {value!r} must be a number from 0 to 1 (the share of inputs that may fail)")
    return float(value)


def outcome_of(stage: str, manifest: str | Path) -> Outcome | None:
    """The outcome of `stage` as its written manifest records it; None for a stage that fails no
    input of its own (filter, dedup)."""
    import pyarrow.parquet as pq

    from svdcli.manifest.io import read_parquet

    names = set(pq.read_schema(manifest).names)
    if stage == "cuts":
        return _cuts_outcome(read_parquet(manifest, columns=["video_path", "status", "error"]).to_pydict())
    error = f"{stage}_error"
    if error not in names:
        return None
    columns = [c for c in ("clip_id", "video_path", "status", error) if c in names]
    table = read_parquet(manifest, columns=columns).to_pydict()
    ok = [i for i, s in enumerate(table.get("status") or ["ok"] * len(table[error])) if s == "ok"]
    failed = [i for i in ok if table[error][i] is not None]
    example = None
    if failed:
        i = failed[0]
        where = table["clip_id"][i] if "clip_id" in table else "a clip"
        example = f"clip {where}: {table[error][i]}"
    return Outcome(stage, len(ok), "clips", len(failed), len(ok) - len(failed), example)


def _cuts_outcome(table: dict) -> Outcome:
    status = table["status"]
    errors = [i for i, s in enumerate(status) if s == "error"]
    example = f"{table['video_path'][errors[0]]}: {table['error'][errors[0]]}" if errors else None
    return Outcome("cuts", len(set(table["video_path"])), "videos", len(errors), status.count("ok"), example,
                   short=status.count("short"))


def check_outcome(result: Outcome | None, max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
                  option: str = "--max-error-rate") -> None:
    """Raise RunFailed when `result` gave nothing, or failed more often than `max_error_rate`."""
    if result is None or result.units == 0:  # a scoring stage over a manifest without clips: nothing failed
        return
    e_g = f" (e.g. {result.example})" if result.example else ""
    if result.produced == 0:
        if result.stage == "cuts":
            why = [f"{result.failed} could not be read"] if result.failed else []
            why += [f"{_count(result.short, 'piece')} shorter than --min-length"] if result.short else []
            raise RunFailed(f"no clips from {_count(result.units, 'video')}: {', '.join(why)}{e_g}")
        raise RunFailed(f"{result.stage}: no clip could be scored, all {result.units} failed{e_g}")
    if result.rate > max_error_rate:
        raise RunFailed(f"{result.stage}: {result.failed} of {result.units} {result.unit} failed "
                        f"({result.rate:.1%}), above {option} {max_error_rate:g}{e_g}")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")
