#!/usr/bin/env bash
# Serve an exported bundle with MONAI Label on this machine only, without contacting the internet.
#
#   scripts/monailabel/start_server.sh BUNDLE_DIR [STUDIES_DIR] [PORT] [VENV_DIR]
#
# BUNDLE_DIR: an exported bundle folder (python -m custom_nets export_bundle ...). STUDIES_DIR: a folder of
# images for the datastore (created empty when missing; images can also be uploaded with each request).
# PORT defaults to 8000, VENV_DIR to .venv-monailabel (built by scripts/monailabel/install.sh).
# The model is served as /infer/<name of BUNDLE_DIR>; see infer.sh for the REST call.
set -euo pipefail

BUNDLE_DIR="$(cd "$1" && pwd)"
STUDIES_DIR="${2:-}"
PORT="${3:-8000}"
VENV_DIR="${4:-.venv-monailabel}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ -n "$STUDIES_DIR" ] || STUDIES_DIR="$(mktemp -d)"
mkdir -p "$STUDIES_DIR"
STUDIES_DIR="$(cd "$STUDIES_DIR" && pwd)"

# Offline: no model-zoo or Hugging Face look-ups, no usage statistics, no DICOM helpers downloaded.
export HF_HUB_OFFLINE=1 MONAI_LABEL_TRACKING_ENABLED=false MONAI_LABEL_TASKS_TRAIN=false \
       MONAI_LABEL_TASKS_STRATEGY=false MONAI_LABEL_TASKS_SCORING=false MONAI_LABEL_TASKS_BATCH_INFER=false

VENV_PYTHON="$(cd "$VENV_DIR" && pwd)/bin/python"
# MONAI Label writes logs/ (and Python caches) into the app folder: run a copy, not the repository's.
APP_DIR="$(mktemp -d)/app"
cp -r "$HERE/app" "$APP_DIR"
# Start from the bundle folder, so that nothing of this repository (custom_nets) is importable by accident.
cd "$BUNDLE_DIR"
exec "$VENV_PYTHON" -m monailabel.main start_server --app "$APP_DIR" --studies "$STUDIES_DIR" \
    --conf bundle "$BUNDLE_DIR" --host 127.0.0.1 --port "$PORT"
