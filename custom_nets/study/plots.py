"""PNG plots of a study, drawn with Pillow (no matplotlib dependency).

* :func:`line_plot`: one panel per dataset, one line with round markers per method, e.g. DSC against the
  number of training cases (the low-data plot), with axis labels, ticks and a legend.
* :func:`rank_heatmap`: one panel per dataset, a grid of methods (rows) by rank positions (columns) whose
  shade is the fraction of bootstrap samples in which the method took that position (rank stability).

Both return the geometry they drew (:class:`Axes`, :class:`HeatmapGrid`), so callers and tests can find the
pixel of a data point or a cell. Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from custom_nets.data.atomic import temporary_sibling

__all__ = ["Axes", "HeatmapGrid", "PALETTE", "heat_colour", "line_plot", "nice_ticks", "rank_heatmap", "series_colour"]

#: Series colours (RGB), cycled in method order: a colour-blind-friendly qualitative palette.
PALETTE = (
    (0, 114, 178), (230, 159, 0), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0),
    (240, 228, 66), (0, 0, 0),
)
_HEAT_LOW, _HEAT_HIGH = (255, 255, 255), (8, 48, 107)
_PANEL_SIZE = (440, 320)  # pixels per line-plot panel
_MARGIN = dict(left=64, right=16, top=36, bottom=52)
_CELL = 56  # pixels per heat-map cell
_MARKER_RADIUS = 4


@dataclass(frozen=True)
class Axes:
    """Where a panel's data area lies on the image and which data range it shows.

    Attributes:
        box: ``(left, top, right, bottom)`` pixel bounds of the data area.
        x_range: ``(low, high)`` data values at the left and right edges.
        y_range: ``(low, high)`` data values at the bottom and top edges.
    """

    box: tuple[int, int, int, int]
    x_range: tuple[float, float]
    y_range: tuple[float, float]

    def to_pixel(self, x: float, y: float) -> tuple[int, int]:
        """Pixel ``(column, row)`` of the data point ``(x, y)``."""
        left, top, right, bottom = self.box
        fx = (x - self.x_range[0]) / (self.x_range[1] - self.x_range[0])
        fy = (y - self.y_range[0]) / (self.y_range[1] - self.y_range[0])
        return int(round(left + fx * (right - left))), int(round(bottom - fy * (bottom - top)))


@dataclass(frozen=True)
class HeatmapGrid:
    """Cell geometry of one heat-map panel: cell ``(row, column)`` spans ``origin + (column, row) * cell``."""

    origin: tuple[int, int]
    cell: int
    shape: tuple[int, int]

    def cell_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` pixels of one cell (right/bottom exclusive)."""
        left, top = self.origin[0] + column * self.cell, self.origin[1] + row * self.cell
        return left, top, left + self.cell, top + self.cell


def series_colour(index: int) -> tuple[int, int, int]:
    """RGB colour of the ``index``-th series (cycles through :data:`PALETTE`)."""
    return PALETTE[index % len(PALETTE)]


def heat_colour(fraction: float) -> tuple[int, int, int]:
    """RGB shade for a fraction in [0, 1]: white at 0, dark blue at 1 (linear in each channel)."""
    f = min(max(float(fraction), 0.0), 1.0)
    return tuple(int(round(lo + f * (hi - lo))) for lo, hi in zip(_HEAT_LOW, _HEAT_HIGH))


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering ``[low, high]``."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"tick range ({low}, {high}) must be finite")
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks, value = [], first
    while value < high + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high - 1e-9:
        ticks.append(round(value, 10))
    return ticks


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size)


def _label(value: float) -> str:
    return f"{value:g}"


def _save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    tmp = temporary_sibling(path)
    try:
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _check_panels(panels: Mapping, what: str) -> None:
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError(f"{what} must be a non-empty dict {{panel title: data}}, got {panels!r}")


def line_plot(
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    path: str | os.PathLike,
    x_label: str,
    y_label: str,
    title: str = "",
    y_range: tuple[float, float] | None = None,
) -> dict[str, Axes]:
    """Draw one panel per entry of ``panels`` with one line per series, and a shared legend.

    Args:
        panels: ``{panel title: {series name: [(x, y), ...]}}``; points are sorted by x; NaN points are
            skipped. Series keep their colour (:func:`series_colour` of their first appearance) in every panel.
        path: PNG file to write.
        x_label: x-axis title, e.g. "training cases".
        y_label: y-axis title, e.g. "DSC (%)".
        title: text above the panels. Default "".
        y_range: fixed ``(low, high)`` for every panel; default: round values around the data.

    Returns:
        ``{panel title: Axes}``, the data-to-pixel mapping of every panel.
    """
    _check_panels(panels, "panels")
    names: list[str] = []
    for series in panels.values():
        names += [name for name in series if name not in names]
    font, small = _font(14), _font(12)
    legend_width = 24 + int(max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(n, font=small) for n in names))
    width = _PANEL_SIZE[0] * len(panels) + legend_width + 24
    height = _PANEL_SIZE[1] + (28 if title else 0)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    offset_y = 0
    if title:
        draw.text((width // 2, 6), title, fill="black", font=font, anchor="mt")
        offset_y = 28
    axes = {}
    for index, (panel, series) in enumerate(panels.items()):
        points = {n: sorted((float(x), float(y)) for x, y in pts if not (math.isnan(x) or math.isnan(y)))
                  for n, pts in series.items()}
        xs = sorted({x for pts in points.values() for x, _ in pts}) or [0.0, 1.0]
        ys = [y for pts in points.values() for _, y in pts] or [0.0, 1.0]
        x_ticks = xs if len(xs) <= 8 else nice_ticks(xs[0], xs[-1])
        y_ticks = nice_ticks(*(y_range if y_range is not None else (min(ys), max(ys))))
        x_span = (xs[0], xs[-1]) if xs[-1] > xs[0] else (xs[0] - 1.0, xs[0] + 1.0)
        pad = 0.06 * (x_span[1] - x_span[0])
        left = index * _PANEL_SIZE[0] + _MARGIN["left"]
        box = (left, offset_y + _MARGIN["top"], left + _PANEL_SIZE[0] - _MARGIN["left"] - _MARGIN["right"],
               offset_y + _PANEL_SIZE[1] - _MARGIN["bottom"])
        ax = Axes(box, (x_span[0] - pad, x_span[1] + pad), (y_ticks[0], y_ticks[-1]) if y_range is None else y_range)
        axes[panel] = ax
        for y in y_ticks:
            if ax.y_range[0] - 1e-9 <= y <= ax.y_range[1] + 1e-9:
                _, py = ax.to_pixel(ax.x_range[0], y)
                draw.line((box[0], py, box[2], py), fill=(225, 225, 225))
                draw.line((box[0] - 4, py, box[0], py), fill="black")
                draw.text((box[0] - 6, py), _label(y), fill="black", font=small, anchor="rm")
        for x in x_ticks:
            px, _ = ax.to_pixel(x, ax.y_range[0])
            draw.line((px, box[3], px, box[3] + 4), fill="black")
            draw.text((px, box[3] + 6), _label(x), fill="black", font=small, anchor="mt")
        draw.rectangle(box, outline="black")  # after the grid lines, which would cover its top and bottom
        draw.text(((box[0] + box[2]) // 2, offset_y + 8), panel, fill="black", font=font, anchor="mt")
        draw.text(((box[0] + box[2]) // 2, box[3] + 26), x_label, fill="black", font=small, anchor="mt")
        label = Image.new("RGB", (int(draw.textlength(y_label, font=small)) + 4, 16), "white")
        ImageDraw.Draw(label).text((2, 1), y_label, fill="black", font=small)
        label = label.rotate(90, expand=True)
        image.paste(label, (left - _MARGIN["left"] + 2, (box[1] + box[3]) // 2 - label.height // 2))
        for name, pts in points.items():
            colour = series_colour(names.index(name))
            pixels = [ax.to_pixel(x, y) for x, y in pts]
            if len(pixels) > 1:
                draw.line(pixels, fill=colour, width=2)
            for px, py in pixels:
                r = _MARKER_RADIUS
                draw.ellipse((px - r, py - r, px + r, py + r), fill=colour)
    legend_x = _PANEL_SIZE[0] * len(panels) + 8
    for i, name in enumerate(names):
        y = offset_y + _MARGIN["top"] + 8 + 20 * i
        draw.line((legend_x, y, legend_x + 16, y), fill=series_colour(i), width=3)
        draw.text((legend_x + 22, y), name, fill="black", font=small, anchor="lm")
    _save_png(image, path)
    return axes


def rank_heatmap(
    frequencies: Mapping[str, np.ndarray],
    methods: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    columns: int = 3,
) -> dict[str, HeatmapGrid]:
    """Draw, per panel, how often each method took each rank position (shade and percentage per cell).

    Args:
        frequencies: ``{panel title: (methods, positions) array}`` of fractions in [0, 1] (rows in the
            order of ``methods``), e.g. from :func:`custom_nets.study.ranking.rank_frequencies`.
        methods: row labels.
        path: PNG file to write.
        title: text above the panels. Default "".
        columns: panels per row. Default 3.

    Returns:
        ``{panel title: HeatmapGrid}`` with the pixel geometry of each panel's cells.
    """
    _check_panels(frequencies, "frequencies")
    methods = list(methods)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in frequencies.items()}
    for name, array in arrays.items():
        if array.ndim != 2 or array.shape[0] != len(methods):
            raise ValueError(
                f"frequencies['{name}'] has shape {array.shape}: expected ({len(methods)}, positions), one row per "
                f"method of {methods}"
            )
    font, small = _font(14), _font(12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = 12 + int(max(measure.textlength(m, font=small) for m in methods))
    n_positions = max(a.shape[1] for a in arrays.values())
    panel_w = label_width + n_positions * _CELL + 24
    panel_h = 48 + len(methods) * _CELL + 36
    n_cols = max(1, min(int(columns), len(arrays)))
    n_rows = math.ceil(len(arrays) / n_cols)
    top = 28 if title else 0
    image = Image.new("RGB", (panel_w * n_cols, top + panel_h * n_rows), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((image.width // 2, 6), title, fill="black", font=font, anchor="mt")
    grids = {}
    for index, (panel, array) in enumerate(arrays.items()):
        x0 = (index % n_cols) * panel_w
        y0 = top + (index // n_cols) * panel_h
        grid = HeatmapGrid((x0 + label_width, y0 + 48), _CELL, array.shape)
        grids[panel] = grid
        draw.text((x0 + label_width + array.shape[1] * _CELL // 2, y0 + 8), panel, fill="black", font=font, anchor="mt")
        for column in range(array.shape[1]):
            left, _, right, _ = grid.cell_box(0, column)
            draw.text(((left + right) // 2, y0 + 40), str(column + 1), fill="black", font=small, anchor="mb")
        for row, method in enumerate(methods):
            _, cell_top, _, cell_bottom = grid.cell_box(row, 0)
            draw.text((grid.origin[0] - 6, (cell_top + cell_bottom) // 2), method, fill="black", font=small, anchor="rm")
            for column in range(array.shape[1]):
                fraction = float(array[row, column])
                left, cell_top, right, cell_bottom = grid.cell_box(row, column)
                draw.rectangle((left, cell_top, right - 1, cell_bottom - 1), fill=heat_colour(fraction))
                text_colour = "white" if fraction > 0.5 else "black"
                draw.text(((left + right) // 2, (cell_top + cell_bottom) // 2), f"{100 * fraction:.0f}%",
                          fill=text_colour, font=small, anchor="mm")
        left, cell_top = grid.origin
        _, _, right, bottom = grid.cell_box(len(methods) - 1, array.shape[1] - 1)
        draw.rectangle((left, cell_top, right - 1, bottom - 1), outline=(120, 120, 120))
        draw.text(((left + right) // 2, bottom + 8), "rank", fill="black", font=small, anchor="mt")
    _save_png(image, path)
    return grids
