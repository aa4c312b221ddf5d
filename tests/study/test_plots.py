"""Pillow plots of the study: data points and heat-map cells land where the returned geometry says."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from custom_nets.study.plots import heat_colour, line_plot, nice_ticks, rank_heatmap, series_colour


def test_line_plot_points_have_their_series_colour(tmp_path):
    panels = {
        "brain": {"scratch": [(10, 60.0), (20, 65.0), (40, 70.0)], "s3d": [(40, 74.0), (10, 66.0), (20, 71.0)]},
        "tof": {"s3d": [(10, 50.0), (30, 55.0)], "scratch": [(10, 40.0), (30, 52.0)]},
    }
    path = tmp_path / "plots" / "low_data.png"
    axes = line_plot(panels, path, "training cases", "DSC (%)", title="low data")
    image = Image.open(path).convert("RGB")
    assert set(axes) == {"brain", "tof"}
    for panel, series in panels.items():
        for name, points in series.items():
            colour = series_colour(["scratch", "s3d"].index(name))  # colour by first appearance, in every panel
            for x, y in points:
                assert image.getpixel(axes[panel].to_pixel(x, y)) == colour, (panel, name, x, y)
    # the data area lies inside the image and higher y is higher up
    left, top, right, bottom = axes["tof"].box
    assert 0 < left < right < image.width and 0 < top < bottom < image.height
    assert axes["brain"].to_pixel(10, 70.0)[1] < axes["brain"].to_pixel(10, 60.0)[1]
    # a point that was not drawn is background
    assert image.getpixel(axes["brain"].to_pixel(30, 62.0)) == (255, 255, 255)


def test_rank_heatmap_cells_are_shaded_by_frequency(tmp_path):
    frequencies = {"D1": np.array([[0.9, 0.1], [0.1, 0.9]]), "average rank": np.array([[0.25, 0.75], [0.75, 0.25]])}
    path = tmp_path / "stability.png"
    grids = rank_heatmap(frequencies, ["s3d", "scratch"], path, title="rank stability")
    image = Image.open(path).convert("RGB")
    for panel, array in frequencies.items():
        for row in range(2):
            for column in range(2):
                left, top, _, _ = grids[panel].cell_box(row, column)
                assert image.getpixel((left + 3, top + 3)) == heat_colour(array[row, column])
    assert heat_colour(0.0) == (255, 255, 255) and heat_colour(1.0) == (8, 48, 107)


def test_heatmap_rows_must_match_methods(tmp_path):
    with pytest.raises(ValueError, match="one row per method"):
        rank_heatmap({"D1": np.ones((3, 3))}, ["a", "b"], tmp_path / "x.png")


def test_nice_ticks_cover_the_range_with_round_steps():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0.0, 100.0) == [0.0, 25.0, 50.0, 75.0, 100.0]
    ticks = nice_ticks(61.3, 74.2)
    assert ticks[0] <= 61.3 and ticks[-1] >= 74.2
    steps = np.diff(ticks)
    np.testing.assert_allclose(steps, steps[0])
    assert steps[0] == 5.0
