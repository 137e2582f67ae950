"""Curation stages. Each module is a pure scorer plus a thin `Stage` wrapper; see stage.py."""
