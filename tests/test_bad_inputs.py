"""The usual bad inputs to `svd pack`, `svd train` (new and --resume) and `svd sample --checkpoint
RUN_DIR`: missing, empty, truncated, the wrong type, the wrong columns. Each must end with exit
code 2 and one error line that names the file, never a traceback, and before any work starts."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from svdcli.cli.main import app
from test_loader import without_fps
from test_train_helpers import REPO, ZERO2, make_shards, one_thread, run, tiny_overrides  # noqa: F401


def assert_clean_error(result, *names: str) -> None:
    """Exit code 2 and one error message on one line (the console is wide, so nothing wraps)
    that holds every one of `names`; no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("error:"))
    assert not any(line.strip() for line in lines[at + 1:]), f"the error spans several lines:\n{result.output}"
    for name in names:
        assert name in lines[at], (name, result.output)


def invoke(*args) -> object:
    return CliRunner(env={"COLUMNS": "10000"}).invoke(app, [str(a) for a in args])


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


def plain_parquet(path: Path, columns: dict) -> None:
    pq.write_table(pa.table(columns), path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Tiny shards whose very first sample's json has no `fps`."""
    shards = make_shards(tmp_path_factory.mktemp("bad_inputs"))
    without_fps(shards / "000000.tar", shards.parent / "bad.tar")
    (shards.parent / "bad.tar").replace(shards / "000000.tar")
    return shards


# --- svd pack ------------------------------------------------------------------------------
PACK_CASES = {  # id: (what to do to the folder, the file the message must name, words it must hold)
    "manifest missing": (lambda f, m: f / "none.parquet", "none.parquet", "not found"),
    "manifest empty": (lambda f, m: _write(f / "m.parquet", b""), "m.parquet", "not a readable Parquet"),
    "manifest truncated": (lambda f, m: _cut_copy(m, f / "m.parquet"), "m.parquet", "not a readable Parquet"),
    "manifest is text": (lambda f, m: _write(f / "m.parquet", b"clip_id,fps\n1,2\n"), "m.parquet", "Parquet"),
    "manifest is a folder": (lambda f, m: _mkdir(f / "m.parquet"), "m.parquet", ""),
    "manifest not ours": (lambda f, m: _plain(f / "m.parquet", {"clip_id": ["a"]}), "m.parquet", "version"),
    "manifest wrong columns": (lambda f, m: _no_fps_column(m, f / "m.parquet"), "m.parquet", "lacks columns"),
    "manifest keeps nothing": (lambda f, m: _keep_none(m, f / "m.parquet"), "m.parquet", "no clips to pack"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _plain(path: Path, columns: dict) -> Path:
    plain_parquet(path, columns)
    return path


def _cut_copy(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    truncate(dst)
    return dst


def _keep_none(src: Path, dst: Path) -> Path:
    from svdcli.manifest.io import read_manifest, write_manifest

    table = read_manifest(src)
    write_manifest(table.set_column(table.column_names.index("keep"), "keep", pa.array([False] * len(table))), dst)
    return dst


def _no_fps_column(src: Path, dst: Path) -> Path:
    from svdcli.manifest.io import read_manifest, write_manifest

    write_manifest(read_manifest(src).drop_columns(["fps"]), dst)
    return dst


@pytest.mark.parametrize("case", PACK_CASES)
def test_pack_bad_manifest(case, data, tmp_path):
    make, name, words = PACK_CASES[case]
    manifest = make(tmp_path, data.parent / "clips.parquet")
    result = invoke("pack", "--manifest", manifest, "--out", tmp_path / "out", "--workers", 1)
    assert_clean_error(result, name, words)
    assert not list((tmp_path / "out").glob("*.tar")) if (tmp_path / "out").exists() else True


OUT_CASES = {
    "out is a file": (lambda out: _write(out, b"x"), "out", "is a file"),
    "pack.json corrupt": (lambda out: _write(_mkdir(out) / "pack.json", b'{"fingerprint": "ab'), "pack.json",
                          "not a readable pack record"),
    "pack.json empty": (lambda out: _write(_mkdir(out) / "pack.json", b""), "pack.json", "not a readable"),
    "pack.json a list": (lambda out: _write(_mkdir(out) / "pack.json", b"[1, 2]"), "pack.json", "not a readable"),
    "pack.json binary": (lambda out: _write(_mkdir(out) / "pack.json", b"\xff\xfe\x00"), "pack.json", "not a readable"),
    "pack.json a folder": (lambda out: _mkdir(_mkdir(out) / "pack.json"), "pack.json", "not a readable"),
}


@pytest.mark.parametrize("case", OUT_CASES)
def test_pack_bad_out_folder(case, data, tmp_path):
    make, name, words = OUT_CASES[case]
    make(tmp_path / "out")
    result = invoke("pack", "--manifest", data.parent / "clips.parquet", "--out", tmp_path / "out",
                    "--workers", 1, "--size", "64x64", "--frames", 4, "--format", "npy")
    assert_clean_error(result, name, words)
    assert not list((tmp_path / "out").glob("*.tar")) if (tmp_path / "out").is_dir() else True


LATENT_CASES = {  # id: (make the --latents source, names, words)
    "latents file missing": (lambda f: f / "vae.safetensors", "vae.safetensors", "no such file"),
    "latents file not safetensors": (lambda f: _write(f / "vae.safetensors", b"PK\x03\x04"), "vae.safetensors",
                                     "not a readable"),
    "latents run dir config bad yaml": (lambda f: _run_dir(f, b"model: [tiny"), "config.yaml", "not valid YAML"),
    "latents run dir config empty": (lambda f: _run_dir(f, b""), "config.yaml", "is empty"),
    "latents run dir config unknown key": (lambda f: _run_dir(f, b"vae: x\n"), "config.yaml",
                                           "unknown config key 'vae'"),
}


def _run_dir(folder: Path, config: bytes) -> Path:
    """A folder that looks like a `svd train` run dir, with `config` as its config.yaml."""
    _write(_mkdir(folder / "run") / "config.yaml", config)
    return folder / "run"


@pytest.mark.parametrize("case", LATENT_CASES)
def test_pack_bad_latents_source(case, data, tmp_path):
    make, name, words = LATENT_CASES[case]
    source = make(tmp_path)
    result = invoke("pack", "--manifest", data.parent / "clips.parquet", "--out", tmp_path / "out",
                    "--workers", 1, "--size", "64x64", "--frames", 4, "--latents", source)
    assert_clean_error(result, name, words)
    assert not (tmp_path / "out").exists()


def test_pack_rewrites_a_shard_whose_marker_is_corrupt_and_overwrite_replaces_a_corrupt_record(data, tmp_path):
    args = ["pack", "--manifest", data.parent / "clips.parquet", "--out", tmp_path / "out", "--workers", 1,
            "--size", "64x64", "--frames", 4, "--format", "npy", "--shard-size", 4]
    assert invoke(*args).exit_code == 0
    marker = tmp_path / "out" / ".pack" / "000001.json"
    good = marker.read_text()
    marker.write_text(good[: len(good) // 2])  # a crash mid-write
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "1 shards written, 1 already done" in " ".join(result.output.split())
    assert json.loads(marker.read_text()) == json.loads(good)
    (tmp_path / "out" / "pack.json").write_text("{")
    assert_clean_error(invoke(*args), "pack.json")
    result = invoke(*args, "--overwrite")
    assert result.exit_code == 0 and "2 shards written" in " ".join(result.output.split()), result.output


# --- svd train (a new run: everything fails before a process group or a model exists) -------
def _index(data: Path, folder: Path, table=None, raw: bytes | None = None) -> Path:
    """A copy of the shards with index.parquet replaced by `table` or `raw` bytes."""
    shutil.copytree(data, folder)
    index = folder / "index.parquet"
    if raw is not None:
        index.write_bytes(raw)
    elif table is not None:
        pq.write_table(table, index)
    return folder


def _truncated_index(data: Path, folder: Path) -> Path:
    _index(data, folder)
    truncate(folder / "index.parquet")
    return folder


def _index_folder(data: Path, folder: Path) -> Path:
    _index(data, folder)
    (folder / "index.parquet").unlink()
    (folder / "index.parquet").mkdir()
    return folder


TRAIN_DATA_CASES = {  # id: (make the --data path from the good shards, names, words)
    "data missing": (lambda d, f: f / "none", "none", "training data not found"),
    "data empty folder": (lambda d, f: _mkdir(f / "empty"), "empty", "no readable shards"),
    "data empty file": (lambda d, f: _write(f / "x.tar", b""), "x.tar", "no readable shards"),
    "data is text": (lambda d, f: _write(f / "x.tar", b"hello"), "x.tar", "no readable shards"),
    "index empty": (lambda d, f: _index(d, f / "s", raw=b""), "index.parquet", "not a readable Parquet"),
    "index is text": (lambda d, f: _index(d, f / "s", raw=b"shard\n000000.tar\n"), "index.parquet", "Parquet"),
    "index truncated": (lambda d, f: _truncated_index(d, f / "s"), "index.parquet", "not a readable Parquet"),
    "index is a folder": (lambda d, f: _index_folder(d, f / "s"), "index.parquet", ""),
    "index wrong columns": (lambda d, f: _index(d, f / "s", pa.table({"clip": ["a"]})), "index.parquet",
                            "no `shard` column"),
    "index names ../": (lambda d, f: _index(d, f / "s", pa.table({"shard": ["../bad.tar"]})), "index.parquet",
                        "'../bad.tar', which is not a file in its folder"),
    "index lists only missing shards": (lambda d, f: _index(d, f / "s", pa.table({"shard": ["000099.tar"]})),
                                        "000099.tar", "missing"),
    "index names /abs": (lambda d, f: _index(d, f / "s", pa.table({"shard": ["000000.tar", "/etc/passwd"]})),
                         "index.parquet", "'/etc/passwd'"),
}


def _train_args(data: Path, out: Path, *extra, config: Path | None = REPO / "pipelines/train/video.yaml") -> list:
    sets = [a for kv in tiny_overrides(steps=1) for a in ("--set", kv)]
    return ["train", "--stage", "video", "--data", data, "--out", out, "--deepspeed", ZERO2,
            "--no-progress", "--no-tensorboard", *(["--config", config] if config else []), *sets, *extra]


@pytest.mark.parametrize("case", TRAIN_DATA_CASES)
def test_train_bad_data(case, data, tmp_path):
    make, name, words = TRAIN_DATA_CASES[case]
    folder = make(data, tmp_path)
    result = invoke(*_train_args(folder, tmp_path / "run"))
    assert_clean_error(result, name, words)
    assert not (tmp_path / "run").exists()


TRAIN_FILE_CASES = {  # id: (option, make the path, names, words)
    "config missing": ("--config", lambda f: f / "none.yaml", "none.yaml", "not found"),
    "config empty": ("--config", lambda f: _write(f / "c.yaml", b""), "c.yaml", "is empty"),
    "config a folder": ("--config", lambda f: _mkdir(f / "c.yaml"), "c.yaml", "is a folder"),
    "config binary": ("--config", lambda f: _write(f / "c.yaml", b"PAR1\xff\xfe\x00\x81"), "c.yaml", "not a text"),
    "config bad yaml": ("--config", lambda f: _write(f / "c.yaml", b"data: {height: [64\n"), "c.yaml", "not valid YAML"),
    "config a list": ("--config", lambda f: _write(f / "c.yaml", b"- 1\n- 2\n"), "c.yaml", "expected a mapping"),
    "config unknown key": ("--config", lambda f: _write(f / "c.yaml", b"stage: video\nlearning_rate: 1\n"), "c.yaml",
                           "unknown config key 'learning_rate'"),
    "config wrong type": ("--config", lambda f: _write(f / "c.yaml", b"data: 3\n"), "c.yaml", "must be a mapping"),
    "deepspeed missing": ("--deepspeed", lambda f: f / "none.json", "none.json", "not found"),
    "deepspeed empty": ("--deepspeed", lambda f: _write(f / "ds.json", b""), "ds.json", "not valid JSON"),
    "deepspeed a list": ("--deepspeed", lambda f: _write(f / "ds.json", b"[2]"), "ds.json", "expected a JSON object"),
    "deepspeed bad stage": ("--deepspeed", lambda f: _write(f / "ds.json", b'{"zero_optimization": {"stage": "two"}}'),
                            "ds.json", "zero_optimization.stage must be 0, 1, 2 or 3, not 'two'"),
    "deepspeed a folder": ("--deepspeed", lambda f: _mkdir(f / "ds.json"), "ds.json", "is a folder"),
    "deepspeed binary": ("--deepspeed", lambda f: _write(f / "ds.json", b"\xff\xfe\x00"), "ds.json", "not valid JSON"),
    "init missing": ("--init", lambda f: f / "none.safetensors", "none.safetensors", "not found"),
    "init not safetensors": ("--init", lambda f: _write(f / "w.safetensors", b"{}"), "w.safetensors", "not a readable"),
    "init a plain folder": ("--init", lambda f: _mkdir(f / "w"), "w", "not a diffusers model folder"),
    "out is a file": ("--out", lambda f: _write(f / "run", b"x"), "run", "is a file"),
}


@pytest.mark.parametrize("case", TRAIN_FILE_CASES)
def test_train_bad_file(case, data, tmp_path):
    option, make, name, words = TRAIN_FILE_CASES[case]
    path = make(tmp_path)
    args = _train_args(data, tmp_path / "run", config=None if option == "--config" else REPO / "pipelines/train/video.yaml")
    if option in ("--deepspeed", "--out"):
        i = args.index(option)
        args[i + 1] = path
    else:
        args += [option, path]
    result = invoke(*args)
    assert_clean_error(result, name, words)
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- svd train --resume: a real one-step run, then one of its files spoiled ----------------
@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "run"
    with pytest.warns(UserWarning, match="its json has no fps"):
        summary = run(out, data, steps=1, checkpoint_every=1, **{"data.shuffle_buffer": 0})
    assert summary["skipped_samples"] == 1  # the bad first sample: skipped, counted, training went on
    logged = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    assert logged[-1]["skipped_samples"] == 1
    return out


def _ckpt(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "step_000001"


RESUME_CASES = {  # id: (spoil the run folder, the path (relative to it) the message names, words)
    "config.yaml bad yaml": (lambda r: _write(r / "config.yaml", b"steps: [1\n"), "config.yaml", "not valid YAML"),
    "config.yaml empty": (lambda r: _write(r / "config.yaml", b""), "config.yaml", "is empty"),
    "config.yaml a list": (lambda r: _write(r / "config.yaml", b"[1]\n"), "config.yaml", "expected a mapping"),
    "config.yaml unknown key": (lambda r: _write(r / "config.yaml", b"stage: video\nmodell: tiny\n"), "config.yaml",
                                "unknown config key 'modell'"),
    "config.yaml a folder": (lambda r: (r / "config.yaml").unlink() or _mkdir(r / "config.yaml"), "config.yaml",
                             "is a folder"),
    "latest names a missing tag": (lambda r: _write(r / "checkpoints/latest", b"step_000009"), "step_000009",
                                   "does not exist"),
    "latest garbage": (lambda r: _write(r / "checkpoints/latest", b"../../etc"), "checkpoints/latest",
                       "should name a checkpoint"),
    "trainer state truncated": (lambda r: truncate(_ckpt(r) / "trainer_rank0.safetensors"),
                                "trainer_rank0.safetensors", "sha256 mismatch"),
    "trainer state deleted": (lambda r: (_ckpt(r) / "trainer_rank0.safetensors").unlink(),
                              "trainer_rank0.safetensors", "is missing"),
    "ema truncated": (lambda r: truncate(_ckpt(r) / "ema.safetensors"), "ema.safetensors", "sha256 mismatch"),
    "ema replaced by text": (lambda r: _write(_ckpt(r) / "ema.safetensors", b"not weights"), "ema.safetensors",
                             "sha256 mismatch"),
    "deepspeed file replaced": (lambda r: _write(_ckpt(r) / "mp_rank_00_model_states.pt", b"\x80\x04K\x01."),
                                "mp_rank_00_model_states.pt", "sha256 mismatch"),
    "deepspeed file added": (lambda r: _write(_ckpt(r) / "zero_pp_rank_1_mp_rank_00_optim_states.pt", b"x"),
                             "zero_pp_rank_1_mp_rank_00_optim_states.pt", "was not written with the checkpoint"),
    "checksums missing": (lambda r: (_ckpt(r) / "sha256.json").unlink(), "sha256.json", "is missing"),
    "checksums corrupt": (lambda r: truncate(_ckpt(r) / "sha256.json"), "sha256.json", "not a readable"),
}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_bad_run_folder(case, finished_run, data, tmp_path):
    spoil, name, words = RESUME_CASES[case]
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    spoil(out)
    result = invoke("train", "--stage", "video", "--data", data, "--out", out, "--deepspeed", ZERO2, "--resume",
                    "--steps", 2, "--no-progress", "--no-tensorboard")  # the run's saved config
    assert_clean_error(result, name, words)
    assert (out / "checkpoints" / "step_000001").is_dir() and not (out / "checkpoints" / "step_000002").exists()


# --- svd sample --checkpoint RUN_DIR --------------------------------------------------------
SAMPLE_CASES = {
    "no checkpoint yet": (lambda r: shutil.rmtree(r / "checkpoints") or _mkdir(r / "checkpoints"), "run",
                          "no checkpoint yet"),
    "latest garbage": (lambda r: _write(r / "checkpoints/latest", b"\x00\xff"), "checkpoints/latest",
                       "should name a checkpoint"),
    "ema deleted": (lambda r: (_ckpt(r) / "ema.safetensors").unlink(), "ema.safetensors", "is missing"),
    "ema truncated": (lambda r: truncate(_ckpt(r) / "ema.safetensors"), "ema.safetensors", "not a readable"),
}


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_sample_bad_run_folder(case, finished_run, tmp_path):
    from PIL import Image

    spoil, name, words = SAMPLE_CASES[case]
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    spoil(out)
    Image.new("RGB", (64, 64)).save(tmp_path / "cond.png")
    result = invoke("sample", "--image", tmp_path / "cond.png", "--checkpoint", out, "--steps", 1,
                    "--out", tmp_path / "v.mp4", "--no-progress")
    assert_clean_error(result, name, words)
    assert not (tmp_path / "v.mp4").exists()


def test_train_on_stored_latents_names_a_shard_whose_json_is_not_json(data, tmp_path):
    import io
    import tarfile

    folder = shutil.copytree(data, tmp_path / "s")
    with tarfile.open(data / "000000.tar") as tin, tarfile.open(folder / "000000.tar", "w") as tout:
        for member in tin:
            body = tin.extractfile(member).read()
            body = b"{not json" if member.name.endswith(".json") else body
            member.size = len(body)
            tout.addfile(member, io.BytesIO(body))
    result = invoke(*_train_args(folder, tmp_path / "run", "--set", "data.latents=true"))
    assert_clean_error(result, "000000.tar", ".json is not readable JSON")
