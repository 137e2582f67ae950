"""Curation: videos -> a manifest of scored clips (stages, runner, executors, recipes, report).

Importing the package loads the stage registry (light: no stage module is imported), which hands
the stage columns to the manifest schema, so every curation module can name them.
"""
from svdcli.curate import stages  # noqa: F401 - registers the stage columns
