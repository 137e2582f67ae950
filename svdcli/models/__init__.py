"""The latent video diffusion networks: the video UNet (`unet.py`), its building blocks
(`blocks.py`, `attention.py`), their configs (`config.py`) and checkpoint formats
(`checkpoints.py`). Plain torch; nothing here imports DeepSpeed."""
