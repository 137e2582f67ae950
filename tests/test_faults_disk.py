"""Full and read-only disks: one line naming the path and the problem, exit 2, no traceback, and
the outputs of earlier runs left as they were.

Two ways, one table each:
- in this process, a write refused with ENOSPC or EROFS by patching the call that writes
  (deterministic, runs everywhere);
- the real thing, in a subprocess that mounts a small tmpfs in its own mount namespace
  (`unshare -m`), fills it or remounts it read-only, and runs the command there. That needs the
  rights to mount (root, as on the development machines) and is skipped without them. A plain
  `chmod 555` would not do: root writes into such a folder all the same.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import assert_error_line
from odd_files import make
from test_faults import PACK, _pack_manifest, invoke

REPO = Path(__file__).resolve().parents[1]


def refuse_writes(monkeypatch, owner, name: str, under: Path, code: int = errno.ENOSPC) -> None:
    """Make `owner.name(path, ...)` fail as a full (or read-only) disk would for paths under `under`."""
    real = getattr(owner, name)

    def refused(*args, **kwargs):
        paths = [os.fspath(a) for a in [*args, *kwargs.values()] if isinstance(a, (str, os.PathLike))]
        if any(str(under) in p for p in paths):
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, refused)


@pytest.fixture()
def video(tmp_path) -> Path:
    return make("good", tmp_path / "in")


RECIPE = "name: small\nreport: false\nstages:\n  cuts: {}\n  motion: {}\n"


# --- simulated in this process ---------------------------------------------------------------
def test_cuts_rerun_with_a_changed_setting_on_a_full_disk(video, tmp_path, monkeypatch):
    out = tmp_path / "m" / "clips.parquet"
    assert invoke("curate", "cuts", video, "--out", out, "--no-progress").exit_code == 0
    before = out.read_bytes()
    refuse_writes(monkeypatch, Path, "write_text", tmp_path / "m")  # stage.json of the new part folder
    result = invoke("curate", "cuts", video, "--out", out, "--min-length", 0.7, "--no-progress")
    assert_error_line(result, 2, "cannot write", "stage.json: no space left on the device")
    assert out.read_bytes() == before


def test_cuts_manifest_write_on_a_full_disk(video, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    out = tmp_path / "m" / "clips.parquet"
    refuse_writes(monkeypatch, pq, "write_table", tmp_path / "m")
    result = invoke("curate", "cuts", video, "--out", out, "--no-progress")
    assert_error_line(result, 2, f"cannot write {tmp_path / 'm'}", "no space left on the device")
    assert not out.exists()


def test_run_on_a_disk_that_fills_up_keeps_the_earlier_workdir(video, tmp_path, monkeypatch):
    (tmp_path / "r.yaml").write_text(RECIPE)
    work = tmp_path / "w"
    args = ["curate", "run", tmp_path / "r.yaml", "--input", video.parent, "--workdir", work, "--no-progress"]
    assert invoke(*args).exit_code == 0
    saved = {p: p.read_bytes() for p in [work / "recipe.resolved.yaml", *sorted((work / "manifests").iterdir())]}
    refuse_writes(monkeypatch, Path, "write_text", work)
    result = invoke(*args, "--set", "cuts.min_length=0.7")
    assert_error_line(result, 2, f"cannot write {work / 'recipe.resolved.yaml'}: no space left on the device")
    assert {p: p.read_bytes() for p in saved} == saved
    assert not list(work.glob(".*tmp")) and not (work / ".svd-run.lock").exists()


def test_pack_on_a_full_disk_exits_2_naming_the_shard(tmp_path, monkeypatch):
    import tarfile

    manifest = _pack_manifest(tmp_path / "in", ["good"])
    refuse_writes(monkeypatch, tarfile, "open", tmp_path / "shards")
    result = invoke("pack", "--manifest", manifest, "--out", tmp_path / "shards", *PACK)
    assert_error_line(result, 2, f"cannot write {tmp_path / 'shards' / '000000.tar'}: no space left on the device")
    assert not list((tmp_path / "shards").glob("*.tar*"))


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_an_unwritable_output_folder_is_refused_before_any_work(video, tmp_path, monkeypatch, code, words):
    import tempfile

    from svdcli.curate.stages import cuts

    def never(*args, **kwargs):
        raise AssertionError("a video was decoded before the output was checked")

    monkeypatch.setattr(cuts.CutsStage, "process", never)
    refuse_writes(monkeypatch, tempfile, "mkstemp", tmp_path / "ro", code)
    (tmp_path / "ro").mkdir()
    result = invoke("curate", "cuts", video, "--out", tmp_path / "ro/clips.parquet", "--no-progress")
    assert_error_line(result, 2, f"--out {tmp_path / 'ro/clips.parquet'}: cannot write in {tmp_path / 'ro'}: {words}")


# --- the real thing: a small tmpfs in a mount namespace of its own ----------------------------------
def _can_mount(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{probe}'"],
                          capture_output=True)
    return done.returncode == 0


def on_small_disk(tmp_path: Path, steps: list[str], size: str = "4m") -> dict[str, tuple[int, str]]:
    """Run `steps` in a private mount namespace with a `size` tmpfs at DISK: a step 'svd ARGS'
    is a command (its exit code and output come back, keyed by its position 'N'); 'FILL' fills
    the disk, 'RO' remounts it read-only; anything else is shell (DISK, LOG and SAVED expand).
    What the steps leave on the disk is gone afterwards: copy what a test compares to SAVED."""
    if not _can_mount(tmp_path):
        pytest.skip("mounting a tmpfs in a private mount namespace needs root and unshare(1)")
    disk, log, saved = tmp_path / "disk", tmp_path / "log", tmp_path / "saved"
    for folder in (disk, log, saved):
        folder.mkdir()
    script = ["set -u", f"mount -t tmpfs -o size={size} tmpfs '{disk}' || exit 97", f"cd '{disk}'"]
    svd = f"'{sys.executable}' -m svdcli"
    for i, step in enumerate(steps):
        if step == "FILL":
            script.append(f"dd if=/dev/zero of='{disk}/.filler' bs=64k 2>/dev/null; true")
        elif step == "RO":
            script.append(f"rm -f '{disk}/.filler'; mount -o remount,ro '{disk}'")
        elif step.startswith("svd "):
            script.append(f"{svd} {step[4:]} > '{log}/{i}.out' 2>&1; echo $? > '{log}/{i}.rc'")
        else:
            script.append(step)
    text = "\n".join(script).replace("DISK", str(disk)).replace("LOG", str(log)).replace("SAVED", str(saved))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "10000"}
    done = subprocess.run(["unshare", "-m", "sh", "-c", text], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode == 97:
        pytest.skip("could not mount a tmpfs")
    assert done.returncode == 0, done.stderr
    return {p.stem: (int((log / f"{p.stem}.rc").read_text()), p.read_text()) for p in log.glob("*.out")}


def one_line(ran: tuple[int, str], code: int, *words: str) -> None:
    rc, output = ran
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert rc == code and len(errors) == 1 and "Traceback" not in output, output
    for word in words:
        assert word in errors[0], (word, output)


def test_cuts_on_a_really_full_then_read_only_disk(video, tmp_path):
    out = "DISK/m/clips.parquet"
    ran = on_small_disk(tmp_path, [
        f"svd curate cuts '{video}' --out {out} --no-progress",
        f"cp {out} SAVED/clips.parquet",
        "FILL",
        f"svd curate cuts '{video}' --out {out} --min-length 0.7 --no-progress",
        f"cmp {out} SAVED/clips.parquet && touch SAVED/same_after_full",
        "RO",
        f"svd curate cuts '{video}' --out {out} --min-length 0.8 --no-progress",
        f"cmp {out} SAVED/clips.parquet && touch SAVED/same_after_ro",
    ])
    disk = tmp_path / "disk"
    assert ran["0"][0] == 0, ran["0"][1]
    one_line(ran["3"], 2, f"cannot write {disk}/m/clips.parquet.parts/", "no space left on the device")
    one_line(ran["6"], 2, f"--out {disk}/m/clips.parquet: cannot write in {disk}/m: read-only file system")
    assert (tmp_path / "saved/same_after_full").exists() and (tmp_path / "saved/same_after_ro").exists()


def test_run_on_a_really_full_then_read_only_disk(video, tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)
    run = f"svd curate run '{tmp_path / 'r.yaml'}' --input '{video.parent}' --workdir DISK/w --no-progress"
    ran = on_small_disk(tmp_path, [
        run,
        "cp -r DISK/w SAVED/w",
        "FILL",
        run + " --set cuts.min_length=0.7",
        "diff -r DISK/w SAVED/w && touch SAVED/same_after_full",
        "RO",
        run + " --set cuts.min_length=0.8",
        "diff -r DISK/w SAVED/w && touch SAVED/same_after_ro",
    ])
    disk = tmp_path / "disk"
    assert ran["0"][0] == 0, ran["0"][1]
    one_line(ran["3"], 2, f"cannot write {disk}/w/", "no space left on the device")
    one_line(ran["6"], 2, f"--workdir {disk}/w: cannot write in {disk}/w: read-only file system")
    assert (tmp_path / "saved/same_after_full").exists() and (tmp_path / "saved/same_after_ro").exists()


def test_pack_on_a_really_full_then_read_only_disk(tmp_path):
    manifest = _pack_manifest(tmp_path / "in", ["good"])
    pack = f"svd pack --manifest '{manifest}' " + " ".join(map(str, PACK))
    ran = on_small_disk(tmp_path, [
        f"{pack} --out DISK/a",
        "cp -r DISK/a SAVED/a",
        "FILL",
        f"{pack} --out DISK/b",
        "diff -r DISK/a SAVED/a && touch SAVED/a_intact",
        "RO",
        f"{pack} --out DISK/c",
    ])
    disk = tmp_path / "disk"
    assert ran["0"][0] == 0, ran["0"][1]
    one_line(ran["3"], 2, f"cannot write {disk}/b/", "no space left on the device")
    one_line(ran["6"], 2, f"--out {disk}/c: cannot write in {disk}: read-only file system")
    assert (tmp_path / "saved/a_intact").exists()


@pytest.mark.slow  # three `svd sample` processes: ~40 s on a shared 2-core machine
def test_sample_on_a_really_full_then_read_only_disk(tmp_path):
    from PIL import Image

    from svdcli.families.svd.tiny import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "tiny.safetensors", frames=3, width=64, height=64)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "cond.png")
    sample = (f"svd sample --image '{tmp_path / 'cond.png'}' --checkpoint '{ckpt}' --steps 1 --no-progress "
              "--out DISK/v.mp4")
    ran = on_small_disk(tmp_path, [
        sample,
        "cp DISK/v.mp4 SAVED/v.mp4",
        "FILL",
        sample + " --seed 1",
        "cmp DISK/v.mp4 SAVED/v.mp4 && touch SAVED/same_after_full",
        "RO",
        sample + " --seed 2",
    ])
    disk = tmp_path / "disk"
    assert ran["0"][0] == 0, ran["0"][1]
    one_line(ran["3"], 2, f"cannot write {disk}/v.mp4: no space left on the device")
    one_line(ran["6"], 2, f"--out {disk}/v.mp4: cannot write in {disk}: read-only file system")
    assert "wrote" not in ran["6"][1] and "steps" not in ran["6"][1]  # refused before sampling
    assert (tmp_path / "saved/same_after_full").exists()
