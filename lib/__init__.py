"""The thin package the notebooks share.

Modules (one idea each):
    lib.diffusion  -- forward/reverse process math (seed 000 §3.1-3.2), checked against diffusers
    lib.models     -- UNet2DModel presets
    lib.train      -- training loop, atomic checkpoints, manifests
    lib.data       -- the embedded inspection benchmark and the MVTec-layout loader
    lib.metrics    -- the papers' evaluation metrics
    lib.plots      -- figure/table style and saving
    lib.widgets    -- ipywidgets explorers with a static fallback
    lib.reproduce  -- papermill runner for every notebook
"""

__version__ = "0.1.0"
