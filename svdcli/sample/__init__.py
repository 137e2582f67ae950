"""Image-to-video (and text-to-video) sampling: checkpoint -> conditioning -> EDM sampler -> video file.

The public entry point is `svdcli.sample.pipeline.VideoPipeline` (see its docstring); this
package imports nothing heavy at import time.
"""
