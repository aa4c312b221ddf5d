"""The ``study`` sub-commands of ``python -m custom_nets``: ``run``, ``report``, ``compare`` and ``demo``.

They map the command line to the runner (:mod:`custom_nets.study.runner`), the reports
(:mod:`custom_nets.study.report`, :mod:`custom_nets.study.compare`) and the demo study
(:mod:`custom_nets.study.demo`); ``python -m custom_nets study <command> --help`` shows their docstrings.
"""

from __future__ import annotations

from collections.abc import Callable

from custom_nets.study.compare import compare_methods
from custom_nets.study.demo import demo_study
from custom_nets.study.report import report_study
from custom_nets.study.runner import run_study

__all__ = ["cli_commands"]


def _run_command(study_file: str) -> str:
    """Fine-tune and evaluate every pair not done yet, write the reports; prints the results table."""
    return run_study(study_file)["table.md"].read_text(encoding="utf-8")


def _report_command(study_file: str) -> str:
    """Re-write the reports from the finished pairs (no training); prints the results table."""
    written = report_study(study_file)
    return written["table.md"].read_text(encoding="utf-8") if "table.md" in written else "no dataset finished yet"


def _compare_command(study_file: str, method_a: str, method_b: str) -> str:
    """Paired Wilcoxon signed-rank test of two methods' per-case DSC, per dataset and pooled."""
    return compare_methods(study_file, method_a, method_b)


def cli_commands() -> dict[str, Callable[..., str]]:
    """The ``study`` sub-commands of ``python -m custom_nets``: run, report, compare, demo."""
    return {"run": _run_command, "report": _report_command, "compare": _compare_command, "demo": demo_study}
