"""Filter rules: thresholds, percentiles over the whole manifest, drop reasons, errors, CLI."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bad_inputs import BAD_MANIFESTS, assert_one_line_error, bad_manifest

from svdcli.cli.main import app
from svdcli.curate.stages.filter import FilterError, apply_rules, parse_rule, run_filter
from svdcli.manifest.io import manifest_history, read_manifest, table_from_rows, write_manifest

COLUMNS = ["clip_id", "status", "error", "motion_score", "motion_error", "text_area", "aesthetic_score"]


def corpus(n: int = 20) -> list[dict]:
    """n ok clips with motion rising 0.0, 0.1, ..., text area alternating, aesthetics 1..n."""
    return [{"clip_id": f"c{i:02d}", "status": "ok", "motion_score": i / 10, "text_area": 0.1 if i % 2 else 0.0,
             "aesthetic_score": float(i + 1)} for i in range(n)]


def reasons(table) -> dict[str, str | None]:
    return dict(zip(table.column("clip_id").to_pylist(), table.column("drop_reason").to_pylist()))


def test_threshold_rules_give_the_first_failing_rule():
    rules = [parse_rule("motion_score >= 0.25"), parse_rule("text_area <= 0.07")]
    out, _ = apply_rules(table_from_rows(corpus(), COLUMNS), rules)
    got = reasons(out)
    assert got["c00"] == got["c02"] == "motion_score < 0.25"  # static (text fine): says what failed
    assert got["c01"] == "motion_score < 0.25"  # static AND texty: the first rule wins
    assert got["c03"] == "text_area > 0.07"
    assert got["c04"] is None
    keep = out.column("keep").to_pylist()
    assert keep == [r is None for r in got.values()]
    assert out.num_rows == 20  # nothing deleted


def test_percentile_rule_drops_the_bottom_quarter():
    out, cutoffs = apply_rules(table_from_rows(corpus(), COLUMNS), [parse_rule("aesthetic_score pct>= 25")])
    kept = [r["aesthetic_score"] for r in out.to_pylist() if r["keep"]]
    assert len(kept) == 15 and min(kept) == 6.0  # 1..20: the 5 lowest go
    assert list(cutoffs.values()) == [pytest.approx(5.75)]
    assert reasons(out)["c00"] == "aesthetic_score < p25"


def test_percentile_ignores_failed_rows_and_is_over_the_whole_manifest():
    rows = corpus()
    rows.append({"clip_id": "broken", "status": "ok", "motion_score": 1000.0, "motion_error": "decode failed",
                 "aesthetic_score": 1000.0})
    rows.append({"clip_id": "video", "status": "error", "error": "no video stream"})
    rules = [parse_rule("motion_score >= 0.25"), parse_rule("aesthetic_score pct>= 50")]
    out, cutoffs = apply_rules(table_from_rows(rows, COLUMNS), rules)
    assert cutoffs[rules[1]] == pytest.approx(10.5)  # the median of 1..20, not pulled up by 'broken'
    got = reasons(out)
    assert got["broken"] == "motion_error" and got["video"] == "error"
    # percentiles are not recomputed after the motion rule: c05..c09 fail on aesthetics
    assert got["c05"] == "aesthetic_score < p50" and got["c10"] is None


def test_missing_values_and_text_percentile_from_the_top():
    rows = corpus(8)
    rows[3]["text_area"] = None
    out, _ = apply_rules(table_from_rows(rows, COLUMNS), [parse_rule("text_area pct<= 50")])
    got = reasons(out)
    assert got["c03"] == "missing text_area"
    assert got["c00"] is None and got["c01"] == "text_area > p50"


@pytest.mark.parametrize("text,message", [
    ("motion_score > ", "cannot parse rule"),
    ("motion_score >= fast", "not a number"),
    ("aesthetic_score pct>= 120", "between 0 and 100"),
])
def test_bad_rules_are_refused_clearly(text, message):
    with pytest.raises(FilterError, match=message):
        parse_rule(text)


def test_rule_on_a_column_no_stage_wrote_names_the_stage():
    table = table_from_rows(corpus(), ["clip_id", "status", "motion_score"])
    with pytest.raises(FilterError, match="svd curate clip"):
        apply_rules(table, [parse_rule("clip_score >= 0.2")])
    with pytest.raises(FilterError, match="not a manifest column"):
        apply_rules(table, [parse_rule("beauty >= 0.2")])


def test_run_filter_writes_history_and_refilters_cleanly(tmp_path):
    path = write_manifest(table_from_rows(corpus(), COLUMNS), tmp_path / "m.parquet", record={"stage": "cuts"})
    run_filter(path, ["motion_score >= 0.25"])
    out, counts, _ = run_filter(path, ["motion_score >= 1.5"])  # rerun with other rules replaces both columns
    table = read_manifest(out)
    assert counts == {"kept": 5, "motion_score < 1.5": 15}
    assert table.column_names.count("keep") == 1
    assert [h["stage"] for h in manifest_history(out)] == ["cuts", "filter", "filter"]
    assert manifest_history(out)[-1]["settings"]["rules"] == ["motion_score >= 1.5"]


def test_cli_prints_counts_per_reason_and_user_errors(tmp_path):
    path = write_manifest(table_from_rows(corpus(), COLUMNS), tmp_path / "m.parquet")
    (tmp_path / "[raw]").mkdir()
    out = tmp_path / "[raw]" / "f.parquet"  # a path rich would read as markup
    result = CliRunner().invoke(app, ["curate", "filter", "-m", str(path), "-o", str(out),
                                      "--rule", "motion_score >= 0.25", "--rule", "aesthetic_score pct>= 25"])
    assert result.exit_code == 0, result.output
    assert "kept 15 of 20" in result.output and "motion_score < 0.25" in result.output
    assert f"-> {out}" in result.output  # printed as it is
    bad = CliRunner().invoke(app, ["curate", "filter", "-m", str(path), "--rule", "clip_score >= 0.2"])
    assert bad.exit_code == 2 and "svd curate clip" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize("op,value,fails_with", [
    (">=", 0.25, "motion_score < 0.25"), (">", 0.25, "motion_score <= 0.25"), ("<=", 0.25, "motion_score > 0.25"),
    ("<", 0.25, "motion_score >= 0.25"), ("==", 0.25, "motion_score != 0.25"), ("!=", 0.3, "motion_score == 0.3"),
])
def test_drop_reason_says_what_the_clip_failed(op, value, fails_with):
    rows = [{"clip_id": "a", "status": "ok", "motion_score": 0.3}, {"clip_id": "b", "status": "ok", "motion_score": 0.25}]
    out, _ = apply_rules(table_from_rows(rows, COLUMNS), [parse_rule(f"motion_score {op} {value}")])
    expected = {"a": 0.3, "b": 0.25}
    compare = {">=": float.__ge__, ">": float.__gt__, "<=": float.__le__, "<": float.__lt__,
               "==": float.__eq__, "!=": float.__ne__}[op]
    assert reasons(out) == {c: None if compare(v, value) else fails_with for c, v in expected.items()}


@pytest.mark.parametrize("rules,words", [
    (["caption >= 3"], ["caption", "string values, not numbers"]),
    (["motion_pair_scores >= 0.2"], ["motion_pair_scores", "holds list<", "not numbers"]),
    (["caption pct>= 50"], ["caption", "not numbers"]),
    (["clip_score >= 0.2"], ["has no column 'clip_score'", "svd curate clip"]),
    (["beauty >= 0.2"], ["not a manifest column"]),
    (["motion_score >"], ["cannot parse rule"]),
    (["motion_score >= fast"], ["not a number"]),
    (["text_area pct>= 50"], ["no clip has a text_area value"]),
])
def test_cli_refuses_rules_it_cannot_apply(tmp_path, rules, words):
    rows = [{**r, "caption": f"clip {i}", "motion_pair_scores": [0.1, 0.2], "text_area": None}
            for i, r in enumerate(corpus(4))]
    path = write_manifest(table_from_rows(rows, COLUMNS + ["caption", "motion_pair_scores"]), tmp_path / "m.parquet")
    before = path.read_bytes()
    args = ["curate", "filter", "-m", str(path), "-o", str(tmp_path / "out.parquet")]
    result = CliRunner().invoke(app, args + [a for r in rules for a in ("--rule", r)])
    assert_one_line_error(result, *words)
    assert not (tmp_path / "out.parquet").exists() and path.read_bytes() == before


@pytest.mark.parametrize("kind", BAD_MANIFESTS)
def test_cli_refuses_a_broken_manifest_naming_it(tmp_path, kind):
    good = write_manifest(table_from_rows(corpus(), COLUMNS), tmp_path / "good.parquet")
    path = bad_manifest(kind, good, tmp_path)
    result = CliRunner().invoke(app, ["curate", "filter", "-m", str(path), "-o", str(tmp_path / "out.parquet"),
                                      "--rule", "motion_score >= 0.25"])
    assert_one_line_error(result, BAD_MANIFESTS[kind], path.name)
    assert not (tmp_path / "out.parquet").exists()


def test_thresholds_compare_at_the_columns_precision():
    rows = [{"clip_id": "a", "status": "ok", "text_area": 0.07, "motion_score": 0.3}]
    table = table_from_rows(rows, COLUMNS)
    assert table.column("text_area").to_pylist()[0] != 0.07  # stored as float32
    out, _ = apply_rules(table, [parse_rule("text_area <= 0.07"), parse_rule("motion_score == 0.3")])
    assert reasons(out) == {"a": None}


def test_cli_refuses_a_folder_as_out(tmp_path):
    path = write_manifest(table_from_rows(corpus(), COLUMNS), tmp_path / "m.parquet")
    (tmp_path / "out").mkdir()
    result = CliRunner().invoke(app, ["curate", "filter", "-m", str(path), "-o", str(tmp_path / "out"),
                                      "--rule", "motion_score >= 0.25"])
    assert_one_line_error(result, "--out", "is a folder")
    assert list((tmp_path / "out").iterdir()) == []
