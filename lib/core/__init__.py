"""Core layer: the diffusion math, network presets, losses, anomaly scoring and metrics (no I/O)."""
