"""Sampling for every model family: checkpoint -> the family's inputs -> sampler -> video file.

The public entry point is `svdcli.sample.pipeline.VideoPipeline` (see its docstring); this
package knows no family by name and imports nothing heavy at import time.
"""
