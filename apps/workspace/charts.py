"""Server-drawn SVG charts: the geometry is computed here, the template only writes it out.

No script and no third-party chart library: the admin's content security policy allows
none inline, and the dashboard must work without the internet. Every chart has a title and a
description for screen readers, and the page shows the same numbers in a table beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Colour-blind-safe (Okabe-Ito), in the order series appear.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")

ROW_HEIGHT = 22
BAR_HEIGHT = 16
LABEL_WIDTH = 220
PLOT_WIDTH = 420
VALUE_WIDTH = 60
LEGEND_LINE = 16


@dataclass(frozen=True)
class Segment:
    series: str
    value: float
    x: float
    width: float
    fill: str


@dataclass(frozen=True)
class Row:
    label: str
    total: float
    y: float
    text_y: float
    value_x: float
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class LegendEntry:
    series: str
    fill: str
    y: float


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars, one row per category, stacked when there are several series."""

    name: str
    title: str
    description: str
    width: int
    height: int
    label_width: int
    rows: tuple[Row, ...]
    legend: tuple[LegendEntry, ...]
    legend_y: float


def _scale(maximum: float, width: float) -> float:
    return width / maximum if maximum > 0 else 0.0


def bar_chart(
    *,
    name: str,
    title: str,
    description: str,
    rows: list[tuple[str, dict[str, float]]],
    series: list[str] | None = None,
) -> BarChart:
    """``rows`` are (category, {series: value}); ``series`` fixes their order and colours."""
    order = series or list(dict.fromkeys(key for _label, values in rows for key in values))
    fills = {key: PALETTE[index % len(PALETTE)] for index, key in enumerate(order)}
    scale = _scale(max((sum(values.values()) for _label, values in rows), default=0), PLOT_WIDTH)
    drawn = []
    for index, (label, values) in enumerate(rows):
        y = index * ROW_HEIGHT
        x = float(LABEL_WIDTH)
        segments = []
        for key in order:
            if key not in values:
                continue
            width = values[key] * scale
            segments.append(Segment(key, values[key], round(x, 2), round(width, 2), fills[key]))
            x += width
        total = sum(values.values())
        drawn.append(
            Row(label, total, y + (ROW_HEIGHT - BAR_HEIGHT) / 2, y + ROW_HEIGHT * 0.7, round(x + 4, 2), tuple(segments))
        )
    # The legend (only for stacked bars) lists one series a line under the bars, so long
    # names never overlap.
    legend_y = len(rows) * ROW_HEIGHT + 8
    stacked = len(order) > 1
    legend = (
        tuple(LegendEntry(key, fills[key], legend_y + index * LEGEND_LINE) for index, key in enumerate(order))
        if stacked
        else ()
    )
    height = len(rows) * ROW_HEIGHT + (8 + len(order) * LEGEND_LINE if stacked else 4)
    return BarChart(
        name,
        title,
        description,
        LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH,
        max(height, ROW_HEIGHT),
        LABEL_WIDTH,
        tuple(drawn),
        legend,
        legend_y,
    )


@dataclass(frozen=True)
class Column:
    label: str
    value: float
    x: float
    y: float
    width: float
    height: float
    label_x: float
    show_label: bool


@dataclass(frozen=True)
class Histogram:
    """Vertical columns over an ordered axis (the hours of the day)."""

    name: str
    title: str
    description: str
    width: int
    height: int
    plot_height: int
    baseline: int
    maximum: float
    columns: tuple[Column, ...]


def histogram(*, name: str, title: str, description: str, values: list[tuple[str, float]]) -> Histogram:
    column_width, gap, plot_height, top = 24, 4, 160, 14
    maximum = max((value for _label, value in values), default=0)
    scale = _scale(maximum, plot_height)
    columns = []
    for index, (label, value) in enumerate(values):
        height = value * scale
        x = index * (column_width + gap) + gap
        columns.append(
            Column(
                label,
                value,
                x,
                round(top + plot_height - height, 2),
                column_width,
                round(height, 2),
                x + column_width / 2,
                index % 3 == 0,
            )
        )
    width = len(values) * (column_width + gap) + gap
    return Histogram(
        name, title, description, width, top + plot_height + 20, plot_height, top + plot_height, maximum, tuple(columns)
    )
