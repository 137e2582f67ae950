"""A family's sampling options are a typed dataclass, checked when a request is parsed (unknown
names refused naming the valid ones, values converted or refused, choices checked), and each
built-in family's methods are the functions of its own modules (none quietly left to a default
by a misspelt name)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from svdcli.errors import SvdError
from svdcli.families import family_for, names
from svdcli.families.base import Family
from svdcli.families.svd.config import SVDOptions
from svdcli.families.vdm.config import VDMOptions
from svdcli.families.video_ldm.config import VideoLDMOptions


def test_unknown_option_names_every_option_the_family_takes():
    with pytest.raises(SvdError) as err:
        VDMOptions.parse({"extend": 3, "fps_id": 2}, "vdm")
    assert str(err.value) == ("family vdm takes no --fps-id (it takes: --prompt, --input, --extend, --upsample, "
                              "--guidance-weight, --conditioning)")
    with pytest.raises(SvdError, match="takes no --passes"):        # worked out by the family, not an option
        VideoLDMOptions.parse({"passes": 2}, "video_ldm")


def test_values_are_converted_to_the_declared_types_or_refused():
    o = SVDOptions.parse({"fps_id": "3", "cond_aug": 0, "prompt": 7, "motion_bucket_id": None}, "svd")
    assert (o.fps_id, o.cond_aug, o.prompt, o.motion_bucket_id) == (3, 0.0, "7", 127)   # None: the default
    assert isinstance(o.cond_aug, float)
    v = VDMOptions.parse({"input": "clip.mp4", "upsample": 2.0}, "vdm")
    assert v.input == Path("clip.mp4") and v.upsample == 2 and isinstance(v.upsample, int)
    with pytest.raises(SvdError, match=r"^--fps-id: cannot read 'six' as int$"):
        SVDOptions.parse({"fps_id": "six"}, "svd")
    with pytest.raises(SvdError, match="--upsample: cannot read 2.5 as int"):
        VDMOptions.parse({"upsample": 2.5}, "vdm")
    with pytest.raises(SvdError, match="--lora: cannot read 'a.safetensors' as list"):
        SVDOptions.parse({"lora": "a.safetensors"}, "svd")


def test_choices_are_checked_when_parsed():
    assert VDMOptions.parse({}, "vdm").conditioning == "reconstruction"
    assert VDMOptions.parse({"conditioning": "replacement"}, "vdm").conditioning == "replacement"
    with pytest.raises(SvdError, match="^--conditioning must be reconstruction or replacement, not 'inpaint'$"):
        VDMOptions.parse({"conditioning": "inpaint"}, "vdm")


def test_a_family_without_options_takes_none():
    with pytest.raises(SvdError, match=r"family toy takes no --prompt \(it takes: none\)"):
        Family.Options.parse({"prompt": "x"}, "toy")
    assert asdict(Family.Options.parse({}, "toy")) == {}


# what each built-in family defines in its own modules: a misspelt function would silently run
# the base's default instead (e.g. the EDM log-normal noise levels for a VP model)
OWN = {
    "svd": {"config": {"validate"},
            "training": {"build", "encoders", "training_vae", "prepare", "save", "saved_state", "pack_vae"},
            "sampling": {"load", "sampling_defaults", "resolve_options", "sampling_inputs", "guided_denoiser", "decode"}},
    "video_ldm": {"config": {"validate"},
                  "training": {"build", "encoders", "training_vae", "prepare", "training_sigmas", "loss", "save",
                               "pack_vae"},
                  "sampling": {"load", "sigmas", "sampling_defaults", "resolve_options", "sampling_inputs",
                               "guided_denoiser", "sample", "sampling_steps", "decode"}},
    "vdm": {"config": {"validate"},
            "training": {"build", "encoders", "prepare", "training_sigmas", "save"},
            "sampling": {"load", "resolve_options", "sigmas", "sampling_inputs", "guided_denoiser", "sample",
                         "sampling_steps", "decode"}},
    "tune_a_video": {"config": {"validate"},
                     "training": {"build", "encoders", "training_vae", "prepare", "training_sigmas", "save",
                                  "saved_state"},
                     "sampling": {"load", "sampling_defaults", "resolve_options", "sigmas", "sampling_inputs",
                                  "guided_denoiser", "sample", "sampling_steps", "decode"}},
}
METHODS = {"config": ["validate"],
           "training": ["build", "encoders", "training_vae", "prepare", "training_sigmas", "loss", "save",
                        "saved_state", "pack_vae"],
           "sampling": ["load", "sampling_defaults", "resolve_options", "sigmas", "sampling_inputs",
                        "guided_denoiser", "sample", "sampling_steps", "decode"]}


@pytest.mark.parametrize("name", sorted(OWN))
def test_each_family_defines_its_methods_in_its_own_modules(name):
    family = family_for(name)
    found = {part: {m for m in methods if family._own(part, m) is not None} for part, methods in METHODS.items()}
    assert found == OWN[name]
    # every function takes the family first, like the method it is
    import inspect

    for part, methods in found.items():
        for m in methods:
            params = list(inspect.signature(family._own(part, m)).parameters)
            assert params[0] == ("cfg" if part == "config" else "family"), f"{name} {part}.{m}{params}"


def test_the_family_classes_forward_nothing():
    """A family's class holds its name, stages, config and options, and only methods whose body
    is its own (no method that just calls one of its modules)."""
    import ast
    import inspect

    for name in names():
        cls = type(family_for(name))
        if not cls.__module__.startswith("svdcli.families."):
            continue
        tree = ast.parse(inspect.getsource(cls))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                imports = [n for n in node.body if isinstance(n, ast.ImportFrom)
                           and (n.module or "").startswith(cls.__module__ + ".")]
                assert not imports, f"{cls.__name__}.{node.name} imports its own module {imports[0].module}"


def test_a_required_method_a_family_does_not_define_names_where_it_goes():
    class Bare(Family):
        name, stages, config_type = "bare", ("video",), dict

    with pytest.raises(NotImplementedError, match=r"family bare defines no prepare .*test_family_options/training\.py"):
        Bare().prepare(None, {}, None, None, None, "cpu")
    assert Bare().encoders(None, "cpu") is None                  # a default
