"""The metric registry: what every evaluation computes and every report shows, one entry per metric.

A metric scores one class of one case from two binary masks (prediction, reference). Its :class:`Metric` entry
tells the reports how to use it, so that the evaluation (:mod:`custom_nets.evaluation.evaluate`), the report
files (:mod:`custom_nets.evaluation.summary`), the demo table (:mod:`custom_nets.demo`), the model-zoo
``eval_metrics`` (:mod:`custom_nets.export.metadata`) and the study reports (:mod:`custom_nets.study`) loop over
the registry instead of naming metrics:

- ``name``: the key of its values: the column of ``metrics_per_case.csv`` and of the study's ``per_case.csv``,
  ``per_class[class][name]``, ``mean_<name>`` and ``n_nan[name]`` in ``summary.json``, ``<name>_mean`` ... in
  ``summary.csv``, ``<dataset>_<name>`` and ``mean_<name>`` in the study's ``table.csv``;
- ``display_name``: its name in tables and plots ("DSC");
- ``function(pred_mask, reference_mask, **arguments) -> float``: NaN when the class is absent from both masks (left
  out of means and counted in ``n_nan``), ``worst`` when it is in only one of them;
- ``arguments``: the case geometry the function takes, among ``spacing_mm`` (voxel size along (D, H, W), from the
  reference's header) and ``tolerance_mm`` (the class's boundary tolerance, ``nsd_tolerance_mm``);
- ``higher_is_better``: the direction of the study's ranks (and of ``worst``);
- ``aggregation``: ``"mean"`` or ``"median"``, the per-class statistic over cases that the overall score is built
  from: ``mean_<name>`` in ``summary.json`` is the mean over classes of it (nnU-Net's convention with "mean"), and
  a study's dataset score is the same number averaged over seeds;
- ``unit``: ``"%"`` for a fraction shown as 100 x value in tables and plots, otherwise the unit shown ("mm");
- ``worst``: the score of a class present in only one mask and of every class of a case without prediction.
  Default 0 when higher is better, infinity otherwise.

The built-in metrics (DSC, NSD) are registered in :mod:`custom_nets.evaluation.metrics` (``METRICS``), where a new
metric is one function and one line. The first registered metric is the primary one: it ranks the methods of a
study, is the score of ``study compare`` and of the low-data plot, and gets per-class columns in the demo table.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["AGGREGATIONS", "GEOMETRY_ARGUMENTS", "Metric", "MetricRegistry"]

#: Per-class statistics over cases that a metric's overall score can be built from.
AGGREGATIONS = ("mean", "median")
#: Case geometry a metric function may take as keyword arguments.
GEOMETRY_ARGUMENTS = ("spacing_mm", "tolerance_mm")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Metric:
    """One registered metric (see the module docstring for every field).

    Args:
        name: lower-case key, e.g. "dsc" (letters, digits, underscores; a column name in every results file).
        display_name: name in tables and plots, e.g. "DSC".
        function: ``function(pred_mask, reference_mask, **arguments) -> float`` on (D, H, W) masks.
        arguments: which of ``spacing_mm``, ``tolerance_mm`` the function takes. Default: none.
        higher_is_better: Default True.
        aggregation: "mean" or "median" over cases, per class. Default "mean".
        unit: "%" (a fraction, shown x100) or the unit shown, e.g. "mm". Default "%".
        worst: score of a class in only one mask and of a missing prediction. Default: 0 if higher is better,
            else infinity.
    """

    name: str
    display_name: str
    function: Callable[..., float]
    arguments: tuple[str, ...] = ()
    higher_is_better: bool = True
    aggregation: str = "mean"
    unit: str = "%"
    worst: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(
                f"metric name {self.name!r} must be a lower-case word (letters, digits, _), e.g. 'hd95': it names "
                "columns of the results files"
            )
        unknown = [a for a in self.arguments if a not in GEOMETRY_ARGUMENTS]
        if unknown or isinstance(self.arguments, str):
            raise ValueError(
                f"metric '{self.name}': arguments {self.arguments!r} must be a tuple of {GEOMETRY_ARGUMENTS}"
            )
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"metric '{self.name}': aggregation {self.aggregation!r} must be one of {AGGREGATIONS}")
        if self.worst is None:
            object.__setattr__(self, "worst", 0.0 if self.higher_is_better else math.inf)

    def compute(self, pred_mask, reference_mask, spacing_mm, tolerance_mm: float) -> float:
        """The metric of one class: ``function`` called with the geometry it takes.

        Args:
            pred_mask: (D, H, W) predicted mask of the class.
            reference_mask: (D, H, W) reference mask of the class.
            spacing_mm: voxel size along (D, H, W) in mm.
            tolerance_mm: the class's boundary tolerance in mm.
        """
        geometry = {"spacing_mm": spacing_mm, "tolerance_mm": tolerance_mm}
        return float(self.function(pred_mask, reference_mask, **{a: geometry[a] for a in self.arguments}))

    def format(self, value: float | None) -> str:
        """A value as tables show it: two decimals, x100 for "%" metrics, "-" when undefined."""
        if value is None or math.isnan(value):
            return "-"
        return f"{(100 * value if self.unit == '%' else value):.2f}"

    @property
    def label(self) -> str:
        """Display name with its unit, e.g. "DSC (%)", for plot axes."""
        return f"{self.display_name} ({self.unit})" if self.unit else self.display_name


class MetricRegistry:
    """The registered metrics, in report order (the first is the primary one).

    Args:
        metrics: the metrics registered at start.
    """

    def __init__(self, *metrics: Metric) -> None:
        self._metrics: dict[str, Metric] = {}
        for metric in metrics:
            self.register(metric)

    def register(self, metric: Metric) -> Metric:
        """Add ``metric`` after the registered ones; returns it.

        Raises:
            ValueError: a metric of that name is registered already.
        """
        if not isinstance(metric, Metric):
            raise TypeError(f"register a Metric(name, display_name, function, ...), got {metric!r}")
        if metric.name in self._metrics:
            raise ValueError(f"metric '{metric.name}' is registered already: choose another name")
        self._metrics[metric.name] = metric
        return metric

    def unregister(self, name: str) -> Metric:
        """Remove and return the metric ``name``."""
        if name not in self._metrics:
            raise KeyError(f"metric '{name}' is not registered; registered: {self.names}")
        return self._metrics.pop(name)

    @contextlib.contextmanager
    def registered(self, metric: Metric) -> Iterator[Metric]:
        """``with METRICS.registered(metric):`` scores ``metric`` too inside the block, then removes it."""
        self.register(metric)
        try:
            yield metric
        finally:
            self.unregister(metric.name)

    @property
    def names(self) -> list[str]:
        return list(self._metrics)

    @property
    def primary(self) -> Metric:
        """The first registered metric: it ranks methods and gets per-class columns in the demo table."""
        if not self._metrics:
            raise ValueError("no metric is registered")
        return next(iter(self._metrics.values()))

    def __getitem__(self, name: str) -> Metric:
        if name not in self._metrics:
            raise KeyError(f"metric '{name}' is not registered; registered: {self.names}")
        return self._metrics[name]

    def __iter__(self) -> Iterator[Metric]:
        return iter(list(self._metrics.values()))

    def __len__(self) -> int:
        return len(self._metrics)

    def __repr__(self) -> str:
        return f"MetricRegistry({', '.join(self.names)})"
