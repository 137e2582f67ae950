"""`svd curate clip`: CLIP embeddings, aesthetic and CLIP scores per clip (its help text; the command is built from the stage's declaration)."""
from __future__ import annotations

HELP = """Embed the first, middle and last frame of every ok clip with an open_clip image tower and score them.

aesthetic_score: a LAION aesthetic head on the L2-normalised embeddings, mean over the 3 frames (the default `laion-mlp` is the improved predictor, ~1-10, on ViT-L-14 'openai'). clip_score: cosine between each frame embedding and the clip's caption embedding, mean over frames; needs a `caption` column (run `svd curate caption` first), else it stays empty.

The embeddings go to <out>.clip_embeddings.parquet (one row per clip and frame: clip_id, frame, time, embedding) for deduplication.

Weights: --pretrained is an open_clip tag (looked up in the Hugging Face cache, downloaded when online) or a checkpoint file. Aesthetic heads are looked up in --weights-dir / $SVD_WEIGHTS_DIR / ~/.cache/svdcli/weights, or given as a path. A missing file stops the run with what to download and where to put it. bf16 on GPU.

Resumes after an interruption; a clip that cannot be read gets a `clip_error` instead of stopping the run."""
