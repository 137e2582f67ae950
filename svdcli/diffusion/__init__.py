"""Diffusion math in plain torch, shared by every model family: preconditioning (`scalings.py`),
noise schedules and sampling grids (`schedules.py`), samplers (`samplers.py`: Euler, Heun,
ancestral; `ddim.py`: DDIM and its inversion), guidance (`guidance.py`) and EDM's training
loss (`edm.py`). Imports nothing from the rest of svdcli but `svdcli.errors`."""
