"""`make demo`: the whole pipeline on a small generated corpus."""
