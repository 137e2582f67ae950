"""Evaluation of generated videos: FVD, FID, CLIPSIM, motion conditioning, curation-score distributions,
the zero-shot UCF-101 protocol (`svd eval`). See docs/eval.md for the protocols and their sources."""
