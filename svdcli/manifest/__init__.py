"""Versioned Parquet manifests: one row per clip, one schema for every writer.

`schema.py` holds the columns (light: read at CLI start-up), `io.py` reads and writes files
(pyarrow); the names below are loaded from them on first use.
"""
_EXPORTS = {"COLUMNS": "schema", "MANIFEST_VERSION": "schema", "schema_for": "schema",
            "read_manifest": "io", "write_manifest": "io", "manifest_history": "io"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'svdcli.manifest' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"svdcli.manifest.{_EXPORTS[name]}"), name)
