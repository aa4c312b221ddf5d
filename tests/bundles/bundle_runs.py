"""Run a bundle in-process the way ``python -m monai.bundle run`` does (initialize, run, finalize)."""

from __future__ import annotations

from monai.bundle import ConfigWorkflow


def run_workflow(config_files, **overrides) -> ConfigWorkflow:
    """Initialize, run and finalize the configs with ``overrides``; returns the workflow (its parser is live)."""
    wf = ConfigWorkflow(config_file=list(config_files), workflow_type="train", logging_file=False, **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf
