"""One module per `svd curate` command; each defines register(app). Keep imports light."""
