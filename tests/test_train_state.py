"""What `--resume` reads, without a training run: the trainer state file (safetensors + JSON,
nothing unpickled) restores every RNG, and a checkpoint whose files changed since they were
written is refused before anything is loaded."""
from __future__ import annotations

import hashlib
import json
import pickle
import random

import numpy as np
import pytest
import torch

from svdcli.errors import SvdError
from svdcli.train.checkpoint import verify_checksums
from svdcli.train.trainer_state import load_state, save_state, set_rng_state


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(), [random.random() for _ in range(3)]


def test_trainer_state_restores_every_rng_and_the_counters(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    random.gauss(0, 1)  # and in python's
    save_state(tmp_path / "t.safetensors", {"step": 7, "data": {"epoch": 1, "batch_in_epoch": 2}})
    expected = draws()
    draws()  # move every generator on
    trainer, tensors, scalars = load_state(tmp_path / "t.safetensors")
    set_rng_state(tensors, scalars)
    assert draws() == expected
    assert trainer == {"step": 7, "data": {"epoch": 1, "batch_in_epoch": 2}}
    with open(tmp_path / "t.safetensors", "rb") as f:  # a safetensors file: a JSON header, then raw bytes
        header = f.read(int.from_bytes(f.read(8), "little"))
    assert {"rng.torch", "rng.numpy", "rng.python", "__metadata__"} <= set(json.loads(header))


class _Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


@pytest.mark.parametrize("content, why", [
    (None, "is missing"),
    (b"", "not a readable trainer state"),
    (pickle.dumps({"step": 3, "x": _Payload()}), "not a readable trainer state"),  # an old-style .pt state
    ("truncated", "not a readable trainer state"),
    ("no_rng", "lacks or mistypes the RNG tensors"),
])
def test_a_bad_trainer_state_file_is_refused_naming_it(tmp_path, capsys, content, why):
    from safetensors.torch import save_file

    path = tmp_path / "trainer_rank0.safetensors"
    if content == "truncated":
        save_state(path, {"step": 1, "data": {}})
        path.write_bytes(path.read_bytes()[:-100])
    elif content == "no_rng":
        save_file({"rng.torch": torch.zeros(3)}, str(path), metadata={"trainer": '{"step": 1, "data": {}}',
                                                                    "rng": '{"numpy": {}, "python": {}}'})
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SvdError, match=f"trainer_rank0.safetensors.*{why}|{why}.*trainer_rank0"):
        load_state(path)
    assert "payload ran" not in capsys.readouterr().out


def write_checkpoint(folder, files: dict[str, bytes]) -> None:
    """Files plus the sha256.json a save records, computed here with hashlib."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    (folder / "sha256.json").write_text(json.dumps({"sha256": digests}))


FILES = {"mp_rank_00_model_states.pt": b"model" * 1000, "zero_pp_rank_0_mp_rank_00_optim_states.pt": b"optim",
         "trainer_rank0.safetensors": b"state", "sub/offloaded.bin": b"nvme"}


def test_checksums_accept_the_files_as_written(tmp_path):
    write_checkpoint(tmp_path / "ck", FILES)
    verify_checksums(tmp_path / "ck")


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "mp_rank_00_model_states.pt").write_bytes(b"model" * 999 + b"modeL"),
     r"mp_rank_00_model_states\.pt differs from the file written at save time"),
    (lambda f: (f / "sub/offloaded.bin").write_bytes(b""), r"offloaded\.bin differs"),
    (lambda f: (f / "zero_pp_rank_1_mp_rank_00_optim_states.pt").write_bytes(b"x"),
     r"zero_pp_rank_1_mp_rank_00_optim_states\.pt was not written with the checkpoint"),
    (lambda f: (f / "trainer_rank0.safetensors").unlink(), r"trainer_rank0\.safetensors is missing"),
    (lambda f: (f / "sha256.json").unlink(), r"sha256\.json is missing"),
    (lambda f: (f / "sha256.json").write_text("{\"sha256\": [1, 2"), r"sha256\.json is not a readable"),
    (lambda f: (f / "sha256.json").write_text("[]"), r"sha256\.json is not a readable"),
])
def test_checksums_refuse_a_changed_added_or_removed_file(tmp_path, change, message):
    write_checkpoint(tmp_path / "ck", FILES)
    change(tmp_path / "ck")
    with pytest.raises(SvdError, match=message):
        verify_checksums(tmp_path / "ck")


def test_the_stream_counts_skipped_samples_and_a_resume_does_not_count_them_twice(tmp_path):
    from test_loader import without_fps
    from test_train_helpers import REPO, make_shards, tiny_overrides

    from svdcli.train.config import load_config
    from svdcli.train.data import DataState, TrainStream

    data = make_shards(tmp_path / "d")
    (bad,) = without_fps(data / "000000.tar", tmp_path / "bad.tar")
    (tmp_path / "bad.tar").replace(data / "000000.tar")
    cfg = load_config(REPO / "pipelines/train/video.yaml", tiny_overrides(**{"data.shuffle_buffer": 0}))
    urls = sorted(str(p) for p in data.glob("*.tar"))  # unshuffled: the bad sample comes first
    full = TrainStream(urls, cfg, rank=0, world_size=1)
    with pytest.warns(UserWarning, match=f"{bad}: its json has no fps"):
        keys = [k for _ in range(3) for k in full.next()[1]["key"]]  # 7 good samples: 3 batches of 2
    assert bad not in keys and full.state == DataState(epoch=0, batch_in_epoch=3, skipped_samples=1)
    resumed = TrainStream(urls, cfg, rank=0, world_size=1, state=DataState(0, 1, 1))
    with pytest.warns(UserWarning):
        assert [k for _ in range(2) for k in resumed.next()[1]["key"]] == keys[2:]
    assert resumed.state == full.state
