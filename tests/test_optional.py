"""Optional dependencies are checked in one place with one wording naming the pip extra: when a
family's training stage is set up (before any data or model is touched) and where a stage or
executor imports one."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from typer.testing import CliRunner

import svdcli.optional as optional
from svdcli.cli.main import app

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def without(monkeypatch):
    """Make the named import names look uninstalled (to find_spec and to import)."""
    missing: set[str] = set()
    real_find, real_import = importlib.util.find_spec, importlib.import_module

    def find_spec(name, *args, **kwargs):
        return None if name in missing else real_find(name, *args, **kwargs)

    def import_module(name, *args, **kwargs):
        if name in missing:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(optional.importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(optional.importlib, "import_module", import_module)
    return missing


def test_one_wording_with_the_pip_extra(without):
    without.update({"faiss", "ray"})
    with pytest.raises(optional.MissingDependency) as err:
        optional.require("numpy", "faiss", needed_by="svd curate dedup")
    assert str(err.value) == "svd curate dedup needs faiss-cpu, which is not installed: pip install 'svdcli[dedup]'"
    with pytest.raises(optional.MissingDependency, match=r"^--executor ray needs ray, which is not installed: "
                                                         r"pip install 'svdcli\[ray\]'$"):
        optional.imported("ray", "--executor ray")
    assert optional.imported("json", "x").dumps({}) == "{}"


def test_every_checked_name_has_its_extra_in_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    for module, (package, extra) in optional.EXTRAS.items():
        assert f"\n{extra} = [" in text, f"{module}: no [{extra}] extra"
        section = text.split(f"\n{extra} = [", 1)[1].split("]", 1)[0]
        assert package in section, f"{module}: {package} is not in the [{extra}] extra"


def test_a_family_stage_that_needs_a_missing_package_is_refused_before_any_work(without, tmp_path):
    """`svd train --family video_ldm --stage decoder` needs LPIPS for its perceptual term: without
    it the command stops at once (no run folder, the data not even looked at), exit 2, one line;
    with the perceptual term off it does not need it."""
    without.add("lpips")
    recipe = REPO / "pipelines/train/video_ldm/decoder.yaml"
    args = ["train", "--family", "video_ldm", "--stage", "decoder", "--config", str(recipe),
            "--data", str(tmp_path / "no-shards"), "--out", str(tmp_path / "run"), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--family video_ldm --stage decoder needs lpips, which is not installed: pip install 'svdcli[train]'" \
        in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, args + ["--set", "decoder.perceptual_weight=0"])
    assert result.exit_code == 2 and "lpips" not in result.output and "no-shards" in result.output
