"""I/O layer: checkpoints with manifests, the one training loop, the command-line builder."""
