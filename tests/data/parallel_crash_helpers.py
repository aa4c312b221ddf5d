"""Worker functions for the process-pool tests; a separate light module so spawned workers
import it quickly (no torch or MONAI import)."""

from __future__ import annotations

import os


def die_on_bad(task: dict) -> dict:
    """Return ``{"ok": name}``, except that a task named ``bad`` kills its worker process."""
    if task["case_id"] == "bad":
        os._exit(3)
    return {"ok": task["case_id"]}
