"""Evaluation studies: fine-tune and evaluate many runs, then rank and compare the pre-training methods.

Scoring one run is :mod:`custom_nets.evaluation`; this package compares runs (``docs/study.md``). Modules, from the
study file to the reports:

- ``schema.py``: the study YAML file, its validation and the ``Study``, ``DatasetSpec``, ``MethodSpec`` and
  ``Pair`` dataclasses;
- ``pairs.py``: one pair on disk (its bundle settings, done or not, its number of training cases);
- ``runner.py``: runs the pairs that are not done (resumable) with :func:`custom_nets.bundle_run.run_bundle`;
- ``results.py``: the per-case results of the finished pairs as arrays, one per registered metric;
- ``ranking.py``: dataset scores, ranks with shared ties, average rank, bootstrap rank stability;
- ``significance.py``: the paired Wilcoxon signed-rank test; ``compare.py``: two methods compared with it;
- ``plots.py``: the PNG plots (Pillow); ``report.py``: every results file;
- ``demo.py``: the synthetic demo study; ``commands.py``: the ``study`` sub-commands of ``python -m custom_nets``.

The metrics in every table are those of ``custom_nets.evaluation.metrics.METRICS``.
"""

from custom_nets.study.compare import compare_methods
from custom_nets.study.demo import demo_study
from custom_nets.study.pairs import pair_done
from custom_nets.study.report import report_study
from custom_nets.study.runner import run_study
from custom_nets.study.schema import DatasetSpec, MethodSpec, Pair, Study, load_study, study_pairs

__all__ = [
    "DatasetSpec",
    "MethodSpec",
    "Pair",
    "Study",
    "compare_methods",
    "demo_study",
    "load_study",
    "pair_done",
    "report_study",
    "run_study",
    "study_pairs",
]
