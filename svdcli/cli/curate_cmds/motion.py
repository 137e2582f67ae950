"""`svd curate motion`: Farneback motion score per clip (its help text; the command is built from the stage's declaration)."""
from __future__ import annotations

HELP = """Score the motion of every ok clip: dense Farneback optical flow on frame pairs (1/15 s apart) sampled at 2 fps inside the clip, at a fixed analysis size (long side 256 px, aspect kept), so scores compare across videos of any size.

motion_score = median over pairs of the mean flow magnitude, in analysis pixels per 1/15 s (= pixels per 30 fps frame at a 512 px long side). Static shots score about 0-0.1; the paper's recipe drops clips below 0.25 (`svd curate filter --rule 'motion_score >= 0.25'`). This command only scores.

Resumes after an interruption; a clip that cannot be read gets a `motion_error` instead of stopping the run.

To save the second decode, score motion while finding the clips: `svd curate cuts ... --motion-out M2` (same scores), as `svd curate run` does when motion follows cuts."""
