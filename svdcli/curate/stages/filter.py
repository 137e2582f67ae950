"""Filter rules over a manifest: set `keep` and `drop_reason`, never delete a row.

Rule grammar (CLI `--rule` and the recipe's `filter.rules`), one rule per string:

    COLUMN OP NUMBER        absolute: keep rows where the comparison holds
                            OP is one of >= > <= < == !=          e.g. "motion_score >= 0.25"
    COLUMN pct>= P          percentile: keep rows at or above the P-th percentile of COLUMN
                            (drops the bottom P%)                 e.g. "aesthetic_score pct>= 25"
    COLUMN pct<= P          keep rows at or below the P-th percentile (drops the top 100-P %)
                                                                  e.g. "text_area pct<= 75"

Percentiles are computed once over the WHOLE manifest (rows with status 'ok', no stage error and
a value in COLUMN), independently of the other rules, with linear interpolation.

A row's `drop_reason` is the first reason that applies, in this order: 'error' (the video could
not be cut), '<stage>_error' (a scoring stage failed on the clip, e.g. 'motion_error'),
'near_duplicate_of:<clip_id>' (the dedup stage found it nearly duplicates a kept clip),
'missing <column>' (no value for a rule's column), then what the clip failed, the first failing
rule negated: 'motion_score < 0.25' for the rule 'motion_score >= 0.25', and for a percentile
rule with pP the P-th percentile: 'aesthetic_score < p25' for 'aesthetic_score pct>= 25'.
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from svdcli.curate.stage import SettingError, StageSpec
from svdcli.errors import SvdError
from svdcli.manifest import schema
from svdcli.manifest.schema import Column

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
        "==": operator.eq, "!=": operator.ne}
_NEGATED = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!=", "!=": "=="}
_RULE = re.compile(r"^\s*([A-Za-z_]\w*)\s*(pct>=|pct<=|>=|<=|==|!=|>|<)\s*(\S+)\s*$")
COLUMNS = (
    Column("keep", pa.bool_(), "filter", "true when the clip passed every rule"),
    Column("drop_reason", pa.string(), "filter", "what the clip failed, e.g. `motion_score < 0.25` (null when kept)"),
)


def error_columns() -> list[str]:
    """The `<stage>_error` columns of the scoring stages, in stage order: the first one set names
    a clip's drop reason."""
    return [name for name, column in schema.COLUMNS.items() if name == f"{column.stage}_error"]


class FilterError(SvdError):
    """A rule that cannot be parsed or applied; the message says how to fix it."""


@dataclass(frozen=True)
class Rule:
    column: str
    op: str  # one of _OPS, or 'pct>=' / 'pct<='
    value: float

    @property
    def is_percentile(self) -> bool:
        return self.op.startswith("pct")

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.value:g}"

    def holds(self, value: float, threshold: float | None = None) -> bool:
        """Whether `value` passes; a percentile rule compares with its resolved `threshold`."""
        return _OPS[self.op.removeprefix("pct")](value, self.value if threshold is None else threshold)

    def failed(self) -> str:
        """What a clip that fails the rule did: 'motion_score < 0.25', 'aesthetic_score < p25'."""
        bound = f"p{self.value:g}" if self.is_percentile else f"{self.value:g}"
        return f"{self.column} {_NEGATED[self.op.removeprefix('pct')]} {bound}"


def parse_rule(text: str) -> Rule:
    """Parse one rule string (see the module docstring for the grammar)."""
    match = _RULE.match(text)
    if not match:
        raise FilterError(f"cannot parse rule {text!r}: expected 'COLUMN OP NUMBER' with OP one of "
                          ">= > <= < == != pct>= pct<= (e.g. 'motion_score >= 0.25', 'aesthetic_score pct>= 25')")
    column, op, raw = match.groups()
    try:
        value = float(raw)
    except ValueError:
        raise FilterError(f"rule {text!r}: {raw!r} is not a number") from None
    if op.startswith("pct") and not 0 <= value <= 100:
        raise FilterError(f"rule {text!r}: a percentile must be between 0 and 100")
    return Rule(column, op, value)


def is_numeric(kind: pa.DataType) -> bool:
    """Whether rules can compare a column of this type (scores, lengths; not text or lists)."""
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def _check_columns(table: pa.Table, rules: list[Rule], where: str = "the manifest") -> None:
    for rule in rules:
        if rule.column in table.column_names:
            kind = table.schema.field(rule.column).type
            if not is_numeric(kind):
                raise FilterError(f"rule '{rule}': {rule.column} in {where} holds {kind} values, not numbers; "
                                  "rules compare numeric columns (scores, lengths)")
            continue
        known = schema.COLUMNS.get(rule.column)
        hint = (f"run `svd curate {known.stage}` first" if known
                else "it is not a manifest column (see manifests/README.md)")
        raise FilterError(f"rule '{rule}': {where} has no column {rule.column!r}; {hint}")


def error_reasons(table: pa.Table) -> list[str | None]:
    """'error' for failed videos, 'short' for pieces below the cuts stage's min_length,
    '<stage>_error' for the first failed stage, else None."""
    n = table.num_rows
    reasons: list[str | None] = [None] * n
    if "status" in table.column_names:
        reasons = [None if s in (None, "ok") else "short" if s == "short" else "error"
                   for s in table.column("status").to_pylist()]
    for name in [c for c in error_columns() if c in table.column_names]:
        for i, message in enumerate(table.column(name).to_pylist()):
            if reasons[i] is None and message is not None:
                reasons[i] = name
    return reasons


def percentile_cutoffs(table: pa.Table, rules: list[Rule], healthy: np.ndarray) -> dict[Rule, float]:
    """The value each percentile rule compares with, over healthy rows with a value."""
    cutoffs = {}
    for rule in [r for r in rules if r.is_percentile]:
        values = np.array(table.column(rule.column).to_pylist(), dtype=object)
        present = np.array([v is not None for v in values], bool) & healthy
        if not present.any():
            raise FilterError(f"rule '{rule}': no clip has a {rule.column} value to take a percentile of")
        cutoffs[rule] = float(np.percentile(values[present].astype(np.float64), rule.value))
    return cutoffs


def apply_rules(table: pa.Table, rules: list[Rule],
                where: str = "the manifest") -> tuple[pa.Table, dict[Rule, float]]:
    """Return `table` with `keep` and `drop_reason` set, and the percentile cut-offs used."""
    _check_columns(table, rules, where)
    reasons = error_reasons(table)
    if "duplicate_of" in table.column_names:  # the dedup stage ran: near duplicates go next
        from svdcli.curate.stages.dedup import REASON

        for i, kept in enumerate(table.column("duplicate_of").to_pylist()):
            if reasons[i] is None and kept is not None:
                reasons[i] = REASON + kept
    cutoffs = percentile_cutoffs(table, rules, np.array([r is None for r in reasons], bool))
    for rule in rules:
        threshold = cutoffs.get(rule, _in_column_precision(rule.value, table.schema.field(rule.column).type))
        for i, value in enumerate(table.column(rule.column).to_pylist()):
            if reasons[i] is not None:
                continue
            if value is None:
                reasons[i] = f"missing {rule.column}"
            elif not rule.holds(value, threshold):
                reasons[i] = rule.failed()
    keep = pa.array([r is None for r in reasons], pa.bool_())
    from svdcli.manifest.io import put_column

    out = put_column(put_column(table, "keep", keep), "drop_reason", pa.array(reasons, pa.string()))
    return out, cutoffs


def _in_column_precision(value: float, kind: pa.DataType) -> float:
    """A rule's number as the column stores it: 0.07 in a float32 column is float32(0.07), so
    'text_area <= 0.07' keeps a clip whose stored text_area is 0.07."""
    return float(pa.scalar(value, pa.float64()).cast(kind).as_py()) if pa.types.is_floating(kind) else value


def reason_counts(table: pa.Table) -> dict[str, int]:
    """Rows per drop reason ('kept' for kept rows), most frequent first."""
    counts: dict[str, int] = {}
    for reason in table.column("drop_reason").to_pylist():
        counts[reason or "kept"] = counts.get(reason or "kept", 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] != "kept", -kv[1])))


def run_filter(manifest: Path, rules: list[str], out: Path | None = None) -> tuple[Path, dict[str, int], dict]:
    """Apply `rules` to a manifest file and write it atomically with a history record."""
    from svdcli.manifest.io import manifest_history, read_manifest, write_manifest

    parsed = [parse_rule(r) for r in rules]
    if not parsed:
        raise FilterError("no rules given: pass at least one --rule (e.g. --rule 'motion_score >= 0.25')")
    out = Path(out or manifest)
    if out.is_dir():
        raise FilterError(f"--out {out} is a folder; name the manifest file to write, e.g. {out / 'filtered.parquet'}")
    table = read_manifest(manifest)
    filtered, cutoffs = apply_rules(table, parsed, str(manifest))
    resolved = {str(r): cutoffs.get(r, r.value) for r in parsed}
    record = {"stage": "filter", "settings": {"rules": [str(r) for r in parsed]},
              "cutoffs": resolved, "input": str(manifest)}
    write_manifest(filtered, out, record=record, history=manifest_history(table))
    return out, reason_counts(filtered), resolved


# --- the stage in a recipe ------------------------------------------------------------------
@dataclass
class FilterConfig:
    rules: list[str] = field(default_factory=list)  # rule strings, in the grammar above


def check_rules(rules: Any) -> None:
    """Refuse anything but a non-empty list of rules that parse."""
    if not rules or not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        raise SettingError(f"filter.rules must be a non-empty list of rule strings, "
                           f"e.g. ['motion_score >= 0.25'], not {rules!r}")
    for rule in rules:
        try:
            parse_rule(rule)
        except SvdError as exc:
            raise SettingError(f"filter.rules: {exc}") from None


def _check_setting(name: str, value: Any) -> Any:
    check_rules(value)  # `rules` is the only setting
    return value


def recipe_step(src: Path, out: Path, settings: dict, opts) -> None:
    """The filter step of a recipe: one pass over the merged manifest, not shared between ranks."""
    run_filter(src, settings["rules"], out)


SPEC = StageSpec(
    name="filter",
    columns=COLUMNS,
    config=FilterConfig,
    run=recipe_step,
    check=lambda settings: check_rules(settings.get("rules")),
    check_setting=_check_setting,
    last="it needs every score",
)
