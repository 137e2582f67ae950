"""WebDataset shards: `svd pack` writes them, `loader.make_loader` reads them for training."""
