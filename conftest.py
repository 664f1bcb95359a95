"""Shared pytest set-up: notebook and figure output of a test run goes to a temporary
folder, never over the committed figures/ (the kernels nbval starts inherit this)."""

import os
import tempfile

os.environ.setdefault("KIT_FIGURES_DIR", tempfile.mkdtemp(prefix="kit-test-figures-"))
