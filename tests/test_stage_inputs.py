"""Bad inputs to the scoring stages (`svd curate motion|text|caption|clip`): each is refused before any
work with one line naming the file and what is wrong, exit code 2 and no traceback."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.manifest.io import read_manifest, table_from_rows, write_manifest
from svdcli.manifest.schema import VERSION_KEY

STAGES = ["motion", "text", "caption", "clip"]
CLIP_COLUMNS = ["clip_id", "video_id", "video_path", "start_time", "end_time", "start_frame", "end_frame",
                "num_frames", "fps", "width", "height", "status"]


@pytest.fixture(scope="module")
def stage_args(tmp_path_factory) -> dict[str, list[str]]:
    """Each command's settings that would work (local stand-in models for caption and clip)."""
    pytest.importorskip("open_clip")
    from svdcli.demo.tiny_models import write_tiny_models

    m = write_tiny_models(tmp_path_factory.mktemp("tiny_models"))
    return {"motion": [], "text": ["--detector", "dbnet"],
            "caption": ["--model", m["caption.model"], "--pretrained", m["caption.pretrained"]],
            "clip": ["--model", m["clip.model"], "--pretrained", m["clip.pretrained"], "--aesthetic", "none"]}


def good_table(n: int = 3) -> pa.Table:
    rows = [dict(clip_id=f"v_{12 * k}_{12 * k + 12}", video_id="v", video_path="/videos/v.mp4", start_time=k * 0.5,
                 end_time=k * 0.5 + 0.5, start_frame=12 * k, end_frame=12 * k + 12, num_frames=12, fps=24.0,
                 width=96, height=64, status="ok") for k in range(n)]
    return table_from_rows(rows, CLIP_COLUMNS)


def write_raw(table: pa.Table, path, version: bytes | None = b"1"):
    """A Parquet file as is, with (or without) the manifest version key: for tables write_manifest refuses."""
    if version is not None:
        table = table.replace_schema_metadata({VERSION_KEY: version})
    pq.write_table(table, path)
    return path


def damaged_body(path):
    """A manifest whose footer reads but whose column data is overwritten."""
    write_manifest(good_table(200), path)
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    data[4:len(data) - footer - 8] = b"\xff" * (len(data) - footer - 12)
    path.write_bytes(bytes(data))
    return path


def truncated(path):
    write_manifest(good_table(), path)
    return with_bytes(path, path.read_bytes()[: path.stat().st_size // 2])


def with_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def folder(path):
    path.mkdir()
    return path


# (case, how to make the --manifest file, what the error line must say)
BAD_MANIFESTS = [
    ("missing", lambda p: p, "manifest not found"),
    ("empty-file", lambda p: with_bytes(p, b""), "not a readable Parquet file"),
    ("truncated", truncated, "not a readable Parquet file"),
    ("csv-not-parquet", lambda p: with_bytes(p, b"clip_id,video_path\na,b.mp4\n"), "not a readable Parquet file"),
    ("a-folder", folder, "not a readable Parquet file"),
    ("foreign-parquet", lambda p: write_raw(good_table(), p, version=None), "no svdcli manifest version"),
    ("newer-version", lambda p: write_raw(good_table(), p, version=b"99"), "manifest version 99"),
    ("no-video_path", lambda p: write_manifest(good_table().drop_columns(["video_path"]), p),
     "lacks column(s) video_path"),
    ("no-start_time", lambda p: write_manifest(good_table().drop_columns(["start_time"]), p),
     "lacks column(s) start_time"),
    ("no-columns-at-all", lambda p: write_manifest(good_table().select(["clip_id"]), p),
     "lacks column(s) video_path, start_time, end_time, width, height"),
    ("start_time-as-text", lambda p: write_raw(good_table().set_column(
        3, "start_time", pa.array(["0", "0.5", "1"])), p), "column start_time is string"),
    ("damaged-body", damaged_body, "cannot be read"),
]


def refused(args: list[str], *fragments: str) -> str:
    """Run the CLI; it must exit 2 with exactly one error line, the last, holding every fragment."""
    result = CliRunner().invoke(app, args, env={"COLUMNS": "4000"})  # no wrapping: one message, one line
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:], result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("case, make, says", BAD_MANIFESTS, ids=[c for c, _, _ in BAD_MANIFESTS])
@pytest.mark.parametrize("stage", STAGES)
def test_bad_manifest_is_refused_naming_the_file(stage, case, make, says, stage_args, tmp_path):
    manifest = make(tmp_path / "clips.parquet")
    out = tmp_path / "out.parquet"
    refused(["curate", stage, "-m", str(manifest), "-o", str(out), "--no-progress", *stage_args[stage]],
            str(manifest), says)
    assert not out.exists() and not list(tmp_path.glob("*.parts"))  # refused before any work


def test_missing_columns_name_the_stage_that_reads_them(stage_args, tmp_path):
    manifest = write_manifest(good_table().drop_columns(["fps"]), tmp_path / "clips.parquet")
    refused(["curate", "motion", "-m", str(manifest), "--no-progress"], "lacks column(s) fps", "svd curate motion")


@pytest.mark.parametrize("stage, column, values", [
    ("motion", "status", [1, 1, 1]),
    ("clip", "caption", [1.0, 2.0, None]),
])
def test_an_optional_column_of_the_wrong_type_is_refused(stage, column, values, stage_args, tmp_path):
    table = good_table()
    table = table.drop_columns([column]) if column in table.column_names else table
    manifest = write_raw(table.append_column(column, pa.array(values)), tmp_path / "clips.parquet")
    refused(["curate", stage, "-m", str(manifest), "--no-progress", *stage_args[stage]], str(manifest),
            f"column {column} is")


@pytest.mark.parametrize("stage", STAGES)
def test_an_output_that_is_a_folder_is_refused_before_work(stage, stage_args, tmp_path):
    manifest = write_manifest(good_table(), tmp_path / "clips.parquet")
    (tmp_path / "out").mkdir()
    refused(["curate", stage, "-m", str(manifest), "-o", str(tmp_path / "out"), "--no-progress",
             *stage_args[stage]], str(tmp_path / "out"), "is a folder")
    assert not list(tmp_path.glob("*.parts"))


@pytest.mark.parametrize("device, says", [("tpu9", "is not a device"), ("cuda:x", "is not a device")])
@pytest.mark.parametrize("stage", ["text", "caption", "clip"])
def test_a_bad_device_is_refused_before_work(stage, device, says, stage_args, tmp_path):
    manifest = write_manifest(good_table(), tmp_path / "clips.parquet")
    refused(["curate", stage, "-m", str(manifest), "-o", str(tmp_path / "o.parquet"), "--no-progress",
             "--device", device, *stage_args[stage]], f"--device {device!r}", says)
    assert not list(tmp_path.glob("*.parts"))


@pytest.mark.parametrize("stage", STAGES)
def test_a_manifest_without_clips_gives_a_manifest_with_the_stage_columns(stage, stage_args, tmp_path):
    from svdcli.curate.stages.caption import CaptionStage
    from svdcli.curate.stages.clip import ClipEmbedStage
    from svdcli.curate.stages.motion import MotionStage
    from svdcli.curate.stages.text import TextStage

    columns = {"motion": MotionStage, "text": TextStage, "caption": CaptionStage, "clip": ClipEmbedStage}[stage].columns
    manifest = write_manifest(good_table(0), tmp_path / "clips.parquet")
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(app, ["curate", stage, "-m", str(manifest), "-o", str(out), "--no-progress",
                                      *stage_args[stage]])
    assert result.exit_code == 0, result.output
    written = read_manifest(out)
    assert written.num_rows == 0 and set(columns) <= set(written.column_names)


def half_of(source):
    return lambda p: with_bytes(p, source.read_bytes()[: source.stat().st_size // 2])


def truncated_safetensors(path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(256)}, str(path))
    return with_bytes(path, path.read_bytes()[:-100])


# (case, file name, how to make the --pretrained file from the stage's good one, what the error says)
BAD_PRETRAINED = [
    ("empty", "w.pt", lambda good: lambda p: with_bytes(p, b""), "cannot be read as open_clip weights"),
    ("truncated", "w.pt", half_of, "cannot be read as open_clip weights"),
    ("a-json-file", "w.json", lambda good: lambda p: with_bytes(p, b'{"embed_dim": 64}'),
     "cannot be read as open_clip weights"),
    ("truncated-safetensors", "w.safetensors", lambda good: truncated_safetensors, "SafetensorError"),
    ("random-bytes-in-a-zip", "w.pt", lambda good: zip_of_garbage, "cannot load"),
]


def zip_of_garbage(path):
    """A well-formed zip that is no torch checkpoint: passes the cheap check, fails the load, by name."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w/data.pkl", b"\x00" * 64)
    return path


@pytest.mark.parametrize("case, name, make, says", BAD_PRETRAINED, ids=[c[0] for c in BAD_PRETRAINED])
@pytest.mark.parametrize("stage", ["caption", "clip"])
def test_a_bad_pretrained_file_is_refused_naming_it(stage, case, name, make, says, stage_args, tmp_path):
    args = list(stage_args[stage])
    where = args.index("--pretrained") + 1
    bad = make(Path(args[where]))(tmp_path / name)
    args[where] = str(bad)
    manifest = write_manifest(good_table(), tmp_path / "clips.parquet")
    refused(["curate", stage, "-m", str(manifest), "-o", str(tmp_path / "o.parquet"), "--no-progress", *args],
            str(bad), says)
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("content, says", [
    ('{"embed_dim": 64,', "is not valid JSON"),
    ("[1, 2]", "is not an open_clip model config: no embed_dim, vision_cfg, text_cfg"),
    ('{"embed_dim": 64, "vision_cfg": {}}', "is not an open_clip model config: no text_cfg"),
], ids=["truncated-json", "a-list", "no-text_cfg"])
@pytest.mark.parametrize("stage", ["caption", "clip"])
def test_a_bad_model_config_is_refused_and_does_not_break_later_runs(stage, content, says, stage_args, tmp_path):
    args = list(stage_args[stage])
    config = with_bytes(tmp_path / "bad-model.json", content.encode())
    good = args[args.index("--model") + 1]
    args[args.index("--model") + 1] = str(config)
    manifest = write_manifest(good_table(0), tmp_path / "clips.parquet")
    refused(["curate", stage, "-m", str(manifest), "-o", str(tmp_path / "o.parquet"), "--no-progress", *args],
            f"--model {config}", says)
    args[args.index("--model") + 1] = good  # open_clip rescans every config it was given: still fine
    result = CliRunner().invoke(app, ["curate", stage, "-m", str(manifest), "-o", str(tmp_path / "o.parquet"),
                                      "--no-progress", *args])
    assert result.exit_code == 0, result.output


def test_weights_of_another_model_are_refused_naming_the_file_and_model(stage_args, tmp_path):
    args = list(stage_args["clip"])
    coca = stage_args["caption"][stage_args["caption"].index("--pretrained") + 1]
    args[args.index("--pretrained") + 1] = coca
    manifest = write_manifest(good_table(), tmp_path / "clips.parquet")
    refused(["curate", "clip", "-m", str(manifest), "-o", str(tmp_path / "o.parquet"), "--no-progress", *args],
            f"cannot load {coca} into open_clip tiny-clip", "state_dict")


@pytest.mark.parametrize("content", [b"", b"not a torch file"], ids=["empty", "text"])
def test_a_bad_aesthetic_head_is_refused_naming_it(content, stage_args, tmp_path):
    args = list(stage_args["clip"])
    head = with_bytes(tmp_path / "head.pth", content)
    args[args.index("--aesthetic") + 1] = str(head)
    manifest = write_manifest(good_table(), tmp_path / "clips.parquet")
    refused(["curate", "clip", "-m", str(manifest), "-o", str(tmp_path / "o.parquet"), "--no-progress", *args],
            f"cannot read aesthetic head {head}")


# (stage, settings that replace or add to the working ones, what the error says)
BAD_SETTINGS = [
    ("text", ["--frames", "0fps"], "--frames must be 'fml'"),
    ("text", ["--detector", "tesseract"], "--detector must be one of auto, craft, dbnet"),
    ("caption", ["--generation", "greedy"], "--generation must be one of"),
    ("caption", ["--num-beams", "4", "--num-beam-groups", "3"], "multiple of --num-beam-groups"),
    ("caption", ["--seq-len", "5", "--min-seq-len", "5"], "must be larger than --min-seq-len"),
    ("caption", ["--pretrained", "{tmp}"], "is neither a file nor a known tag"),
    ("clip", ["--model", "ViT-Nope-14"], "unknown open_clip model 'ViT-Nope-14'"),
    ("clip", ["--pretrained", "{tmp}"], "is neither a file nor a known tag"),
    ("clip", ["--aesthetic", "{tmp}"], "is not a file, an hf-hub: name or one of laion-mlp"),
]


@pytest.mark.parametrize("stage, settings, says", BAD_SETTINGS,
                         ids=[f"{s}{'-'.join(a[::2])}" for s, a, _ in BAD_SETTINGS])
def test_a_bad_setting_is_refused_before_work(stage, settings, says, stage_args, tmp_path):
    args = list(stage_args[stage])
    for flag, value in zip(settings[::2], settings[1::2]):
        value = value.format(tmp=tmp_path)  # a folder where a file is wanted
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    manifest = write_manifest(good_table(), tmp_path / "clips.parquet")
    refused(["curate", stage, "-m", str(manifest), "-o", str(tmp_path / "o.parquet"), "--no-progress", *args], says)
    assert not list(tmp_path.glob("*.parts"))
