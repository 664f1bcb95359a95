"""The thin package the notebooks share.

Modules (one idea each):
    lib.diffusion  -- forward/reverse process math (seed 000 §3.1-3.2), checked against diffusers
    lib.models     -- UNet2DModel presets, the segmentation U-Net
    lib.train      -- training loop, atomic checkpoints, manifests
    lib.data       -- the embedded inspection benchmark and the MVTec-layout loader
    lib.synth      -- synthetic anomalies for training (Perlin masks, blends; DRAEM, DiffusionAD §IV-D)
    lib.losses     -- focal and smooth-L1 map losses
    lib.metrics    -- the papers' evaluation metrics
    lib.inpaint    -- the thesis' self-aware inpainting (seed 002, Algorithms 1-2, §3.1.3)
    lib.learned_map -- the thesis' DRAEM-style learned anomaly map
    lib.diffusionad -- DiffusionAD one-step / norm-guided denoising and joint training (seed 003)
    lib.bench      -- speed benchmarks measured side by side
    lib.plots      -- figure/table style and saving
    lib.widgets    -- ipywidgets explorers with a static fallback
    lib.reproduce  -- papermill runner for every notebook
"""

__version__ = "0.1.0"
