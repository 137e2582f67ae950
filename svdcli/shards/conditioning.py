"""Former name of svdcli.shards.micro_conditioning (SVD's fps_id and motion_bucket_id); import from there."""
from svdcli.shards.micro_conditioning import DEFAULT_MOTION_BUCKET, MOTION_MAPS, MotionBuckets, fps_id_for  # noqa: F401
