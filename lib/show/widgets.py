"""ipywidgets explorers that also work headless.

``explorer(render, name, t=IntSlider(...), ...)`` always renders ``render(**defaults)``
once as an ordinary figure (shown in the cell output and saved to
``figures/<name>.png``), so papermill and nbval runs, the committed figures and
static notebook viewers all show the default view. With a live Jupyter front end
every change of a slider replaces that same figure in place (one figure, never a stale
one beside it); ``check`` can refuse values that make no sense and say why.
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


def explorer(render: Callable[..., "plt.Figure"], name: str, *,
             check: Callable[..., str | None] | None = None, **controls: widgets.ValueWidget):
    """Show sliders bound to ``render(**values) -> Figure`` above the default figure, which every change redraws in
    place (an IPython display with a ``display_id``). ``check(**values)`` returns None for valid values or a message,
    which is shown instead of redrawing.

    Returns the widget box: ``.children[0]`` holds the controls, ``.children[1]`` the message line.
    """
    if not controls:
        raise ValueError("explorer() needs at least one control, e.g. t=int_slider(500, 0, 999)")
    status = widgets.HTML("")
    values = lambda: {k: w.value for k, w in controls.items()}   # noqa: E731
    box = widgets.VBox([widgets.HBox(list(controls.values())), status])
    display(box)
    problem = check(**values()) if check is not None else None
    if problem:
        raise ValueError(f"explorer {name!r}: the default values are invalid: {problem}")
    fig = render(**values())
    savefig(fig, name)
    handle = display(fig, display_id=True)
    plt.close(fig)

    def update(_change=None):
        problem = check(**values()) if check is not None else None
        status.value = f"<b>not drawn:</b> {problem}" if problem else ""
        if problem:
            return
        fig = render(**values())
        if handle is not None:
            handle.update(fig)
        else:                      # no IPython kernel (a plain script): nothing to update in place
            display(fig)
        plt.close(fig)

    for w in controls.values():
        w.observe(update, names="value")
    return box
