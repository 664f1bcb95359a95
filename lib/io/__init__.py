"""I/O layer: ``checkpoints`` (atomic saves, manifests, sha256, float16 export, ``weights_only`` loading, what kind
of model a file holds, the resume check), ``training`` (the one training loop, on HF accelerate; ``pretrained``
lookup), ``cli`` (config dataclasses ⇄ command-line options)."""
