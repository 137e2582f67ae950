"""Diffusion math in plain torch: EDM preconditioning, noise sampling and loss (`edm.py`) and
noise-level discretizations (`schedules.py`)."""
