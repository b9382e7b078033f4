"""matplotlib without a display, and one way to save a figure, for every report that draws one."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (imported only when a plot is asked for)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure: Any, path: Path, dpi: int = 100) -> Path:
    """Lay the figure out, write it to ``path`` (its folder made) and free it."""
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)
    return Path(path)


def readable_log_axes(axes: Any) -> None:
    """Plain, short tick labels (850, 1.2k, 28k) on a log-log panel. matplotlib labels every minor tick in
    scientific notation when the data span less than a decade (21k to 29k img/s: nine overlapping labels), and none
    when they span more, which leaves 20-400 ms with one label. Here minor ticks are labelled in the short form: all
    of them within a decade, those at 2 and 5 times a power of ten within two, none past that."""
    import math

    from matplotlib.ticker import FuncFormatter

    for axis in (axes.xaxis, axes.yaxis):
        def minor_label(value: float, _position: int, axis: Any = axis) -> str:
            low, high = sorted(axis.get_view_interval())
            if low <= 0 or value <= 0 or high / low >= 100:
                return ""
            leading = round(value / 10 ** math.floor(math.log10(value)))
            return short_number(value) if high / low < 10 or leading in (2, 5) else ""

        axis.set_major_formatter(FuncFormatter(lambda value, _position: short_number(value)))
        axis.set_minor_formatter(FuncFormatter(minor_label))


def short_number(value: float) -> str:
    """A tick value in three significant digits, thousands as k: 0.5, 850, 1.2k, 28k."""
    return f"{value / 1000:.3g}k" if abs(value) >= 1000 else f"{value:.3g}"
