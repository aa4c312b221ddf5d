"""Assemble the outcome of a preprocessing run from manifest records and write its summary files.

Kept apart from the run itself because a multi-rank run assembles the result only after all
ranks finished: every rank reads all manifest shards, and rank 0 writes the files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

from custom_nets.data.atomic import atomic_write_text
from custom_nets.data.manifest import entry_identity, has_outputs

__all__ = ["collect_results", "write_results", "without_shapes"]

logger = logging.getLogger(__name__)


def collect_results(inputs: list[dict], records: dict[str, dict], cache_dir: Path) -> tuple[dict, list[dict]]:
    """Build the result for ``inputs`` (in their order) from their newest records.

    Returns:
        ``(result, unfinished)``: ``result`` is ``{"datalist", "training", "excluded"}`` where each
        training entry holds absolute cached paths plus its ``shape`` (voxels), and
        ``unfinished`` lists the inputs without a usable record.
    """
    training, excluded, unfinished = [], [], []
    for item in inputs:
        record = records.get(entry_identity(item))
        if not has_outputs(record, cache_dir):
            unfinished.append(item)
        elif record["status"] == "ok":
            entry = {k: str(cache_dir / p) for k, p in record["outputs"].items()}
            entry["shape"] = record.get("shape")
            training.append(entry)
        else:
            excluded.append({"image": record["source"], "reason": record["reason"]})
    return {"datalist": str(cache_dir / "datalist.json"), "training": training, "excluded": excluded}, unfinished


def without_shapes(result: dict) -> dict:
    """The public form of a result: training entries carry paths only."""
    training = [{k: v for k, v in entry.items() if k != "shape"} for entry in result["training"]]
    return {**result, "training": training}


def write_results(result: dict, cache_dir: Path) -> None:
    """Write ``datalist.json`` (paths relative to the cache) and ``excluded.csv``; log a summary."""
    relative = [
        {k: os.path.relpath(v, cache_dir) for k, v in entry.items() if k != "shape"} for entry in result["training"]
    ]
    datalist = {"name": "preprocessed cache", "numTraining": len(relative), "training": relative}
    atomic_write_text(cache_dir / "datalist.json", json.dumps(datalist, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "reason"])
    for item in result["excluded"]:
        source = item["image"]
        writer.writerow([";".join(source) if isinstance(source, list) else source, item["reason"]])
    atomic_write_text(cache_dir / "excluded.csv", buffer.getvalue())
    logger.info(
        "Preprocessing done: %d images ok, %d excluded (listed in %s); datalist %s",
        len(result["training"]), len(result["excluded"]), cache_dir / "excluded.csv", cache_dir / "datalist.json",
    )
