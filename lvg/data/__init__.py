"""Data: video io, manifests, latent shards, datamodules and the embedded toy-world generator."""
