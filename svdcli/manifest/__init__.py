"""Versioned Parquet manifests: one row per clip, one schema for every writer."""
from svdcli.manifest.schema import COLUMNS, MANIFEST_VERSION, schema_for
from svdcli.manifest.io import read_manifest, write_manifest, manifest_history

__all__ = ["COLUMNS", "MANIFEST_VERSION", "schema_for", "read_manifest", "write_manifest", "manifest_history"]
