"""The thin package the notebooks share, in layers (arrows point one way):

    lib.core     -- the diffusion math, network presets, losses, anomaly scoring, metrics, paths
    lib.data     -- the embedded benchmark, the MVTec-layout loader, synthetic training anomalies
    lib.io       -- checkpoints with manifests, the one training loop, the command-line builder
    lib.methods  -- one module per paper method (ddpm, inpaint, learned_map, diffusionad)
    lib.show     -- figure style, tables, widgets (imports lib.core only)
    lib.tools    -- reproduce (papermill runner) and bench (speed benchmarks)

tools → methods → core / data / io → third-party libraries; show → core. See lib/README.md.
"""

__version__ = "0.1.0"
