"""svdcli: Stable Video Diffusion end to end."""
__version__ = "0.1.0"
