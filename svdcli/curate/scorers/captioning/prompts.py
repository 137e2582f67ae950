"""Prompts of the caption engines: the defaults, and templates checked before any model loads.

A video prompt may use `{frames}` (how many frames the model sees) and `{seconds}` (the clip's
length); a summary prompt must use both `{coca}` (the CoCa caption of the middle frame) and
`{video}` (the video captioner's caption), so the LLM sees both inputs, as in the paper. Any
other `{name}` is refused, so a typo does not reach the model as literal text.
"""
from __future__ import annotations

import string

from svdcli.errors import SvdError

VIDEO_PROMPT = ("Describe this video clip in one or two sentences: the main subjects, what they do, the setting, "
                "and how the camera moves. Describe only what is visible.")
SUMMARY_PROMPT = ("Two captions describe the same video clip. A caption of its middle frame: \"{coca}\". "
                  "A caption of the whole clip: \"{video}\". Write one sentence that describes the clip, "
                  "keeping what both agree on and the motion. Reply with the sentence only.")

VIDEO_FIELDS = ("frames", "seconds")
SUMMARY_FIELDS = ("coca", "video")


def fields(template: str, where: str) -> set[str]:
    """The `{name}` fields of a template; a malformed one is an error naming `where`."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise SvdError(f"{where}: {exc} (write a literal brace as {{{{ or }}}})") from None


def check_template(template: str, allowed: tuple[str, ...], required: tuple[str, ...], where: str) -> str:
    """Refuse an empty template, unknown fields and missing required ones; returns the template."""
    if not template.strip():
        raise SvdError(f"{where} is empty")
    names = fields(template, where)
    unknown = sorted(names - set(allowed))
    if unknown:
        raise SvdError(f"{where}: unknown field(s) {', '.join('{' + n + '}' for n in unknown)}; "
                       f"it may use {', '.join('{' + n + '}' for n in allowed)}")
    missing = [n for n in required if n not in names]
    if missing:
        raise SvdError(f"{where} must contain {', '.join('{' + n + '}' for n in missing)}: the summary "
                       "is written from both captions")
    return template


def video_prompt(template: str, frames: int, seconds: float) -> str:
    return template.format(frames=frames, seconds=f"{seconds:.1f}")


def summary_prompt(template: str, coca: str, video: str) -> str:
    return template.format(coca=coca, video=video)
