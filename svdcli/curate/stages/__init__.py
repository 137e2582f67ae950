"""The curation stages, one module per stage."""
