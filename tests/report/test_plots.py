"""Report figures (issue 11): titles fit the saved image, the scatter legend covers no point,
the ROC's FAR axis starts at the finest FAR the impostor pairs resolve."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facemetric.report import plots
from facemetric.report.html import render_report

LONG_TITLE = ("center-lambda-0.01 (seed 0): held-out digits, raw features\n"
              "intra/inter 0.144 here; 0.150 ± 0.012 over 3 seeds")


def _points(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    angle = labels * (2 * np.pi / 10) + rng.normal(0, 0.1, n)
    return np.stack([np.cos(angle), np.sin(angle)], 1) * rng.uniform(0.5, 1.5, (n, 1)), labels


def test_scatter_title_fits_in_the_saved_image(tmp_path):
    x, y = _points()
    fig = plots.scatter_figure(x, y, title=LONG_TITLE)
    fig.canvas.draw()
    title_px = fig.axes[0].title.get_window_extent().width
    plots.plt.close(fig)
    path = tmp_path / "s.png"
    plots.feature_scatter(x, y, path, title=LONG_TITLE)
    width, _ = Image.open(path).size
    assert title_px <= width  # the old figure cut a title this long on both sides
    assert "\n" in plots._wrap("word " * 40, 62)  # long titles are wrapped


def test_scatter_legend_is_outside_the_points(tmp_path):
    x, y = _points()
    fig = plots.scatter_figure(x, y, title="t", class_names=[str(i) for i in range(10)])
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    shown = ax.transData.transform(x)
    inside = ((shown[:, 0] >= legend.x0) & (shown[:, 0] <= legend.x1)
              & (shown[:, 1] >= legend.y0) & (shown[:, 1] <= legend.y1))
    assert not inside.any()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes
    plots.plt.close(fig)


def test_roc_far_axis_starts_at_one_over_the_impostor_pairs():
    fpr = np.linspace(0, 1, 301)  # 300 impostor pairs: FAR steps of 1/300
    tpr = np.sqrt(fpr)
    fig = plots.roc_figure({"a": (fpr, tpr)}, min_far=1 / 300)
    assert fig.axes[0].get_xlim()[0] == pytest.approx(1 / 300)
    plots.plt.close(fig)
    fig = plots.roc_figure({"a": (fpr, tpr), "b": (fpr[::2], tpr[::2])})  # default: the finest step
    assert fig.axes[0].get_xlim()[0] == pytest.approx(1 / 300)
    plots.plt.close(fig)
    with pytest.raises(ValueError, match="min_far"):
        plots.roc_figure({"a": (fpr, tpr)}, min_far=0)


def test_report_page_escapes_and_lists_everything():
    page = render_report("t <x>", "intro", ["loss", "acc"], [["a&b", 0.5], ["c", "0.9 ± 0.1"]],
                         [("f.png", "cap")], notes=["n1"])
    assert "t &lt;x&gt;" in page and "a&amp;b" in page and "0.5000" in page and "0.9 ± 0.1" in page
    assert '<img src="f.png"' in page and "<li>n1</li>" in page
