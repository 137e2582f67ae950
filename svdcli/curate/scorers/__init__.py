"""Array-level algorithms the stages wrap: cut detection (cascade, TransNetV2), aesthetic heads, and
the detector's evaluation against labelled footage. No manifest rows, no runner."""
