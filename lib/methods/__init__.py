"""One module per paper method: the method, its config and ``pretrained()``, no plumbing."""
