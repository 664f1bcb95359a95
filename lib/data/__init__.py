"""Data layer: the embedded benchmark, the MVTec-layout loader, synthetic training anomalies.

Modules: ``benchmark`` (category registry, generator, dataset card), ``loader`` (any MVTec AD-layout
folder -> arrays), the category families ``panel``, ``strip``, ``textures`` and (benchmark version 3)
``objects``, with their shared ``draw`` primitives and ``defects``, and ``synth`` (the pseudo-anomalies methods train on).
"""

from .benchmark import *  # noqa: F401,F403
from .benchmark import __all__ as _benchmark_all
from .loader import *  # noqa: F401,F403
from .loader import __all__ as _loader_all
from .convert import *  # noqa: F401,F403
from .convert import __all__ as _convert_all
from .fetch import *  # noqa: F401,F403
from .fetch import __all__ as _fetch_all

__all__ = list(_benchmark_all) + list(_loader_all) + list(_convert_all) + list(_fetch_all)
