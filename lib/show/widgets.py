"""ipywidgets explorers that also work headless.

``explorer(render, name, t=IntSlider(...), ...)`` always renders ``render(**defaults)``
once as an ordinary figure (shown in the cell output and saved to
``figures/<name>.png``), so papermill and nbval runs, the committed figures and
static notebook viewers all show the default view. With a live Jupyter front end
the sliders above it re-render into their own output area on every change.
"""

from __future__ import annotations

from typing import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

from .figures import savefig

__all__ = ["explorer", "int_slider", "float_slider"]


def int_slider(value: int, lo: int, hi: int, step: int = 1, description: str = "") -> widgets.IntSlider:
    return widgets.IntSlider(value=value, min=lo, max=hi, step=step, description=description,
                             continuous_update=False)


def float_slider(value: float, lo: float, hi: float, step: float, description: str = "") -> widgets.FloatSlider:
    return widgets.FloatSlider(value=value, min=lo, max=hi, step=step, description=description,
                               continuous_update=False)


def explorer(render: Callable[..., "plt.Figure"], name: str, **controls: widgets.ValueWidget):
    """Show sliders bound to ``render(**values) -> Figure`` plus the static default figure.

    Returns the widget box (its ``.children[1]`` is the live output area).
    """
    if not controls:
        raise ValueError("explorer() needs at least one control, e.g. t=int_slider(500, 0, 999)")
    live = widgets.Output()

    def update(_change=None):
        values = {k: w.value for k, w in controls.items()}
        with live:
            live.clear_output(wait=True)
            fig = render(**values)
            display(fig)
            plt.close(fig)

    for w in controls.values():
        w.observe(update, names="value")
    box = widgets.VBox([widgets.HBox(list(controls.values())), live])
    display(box)
    fig = render(**{k: w.value for k, w in controls.items()})
    savefig(fig, name)
    plt.show()
    return box
