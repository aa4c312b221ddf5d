#!/usr/bin/env bash
# Build a separate virtual environment with MONAI Label that can serve this project's exported bundles.
#
#   scripts/monailabel/install.sh [VENV_DIR] [extra pip requirements ...]
#
# VENV_DIR defaults to .venv-monailabel. monailabel 0.8.5 (the newest release) is installed with --no-deps and
# its dependencies from requirements.txt beside this script: monailabel's own list without sam2 (a source build
# that pulls a second full torch into a temporary build environment; only MONAI Label's SAM 2 sample apps
# import it) and with the pins bundle serving needs (monai==1.5.2, pydicom<3, pynetdicom<3, dicomweb-client<0.60).
# torchvision comes with monai[torchvision], so pip installs the torch/torchvision pair it resolves (on x86-64
# Linux a CUDA build, several GB). To keep a CPU-only torch, name it as extra requirements, e.g.
#   scripts/monailabel/install.sh .venv-monailabel torch==2.13.0 torchvision==0.28.0 \
#       --extra-index-url https://download.pytorch.org/whl/cpu
# The project itself (custom_nets) is NOT installed there: exported bundles do not need it.
set -euo pipefail

VENV_DIR="${1:-.venv-monailabel}"
shift || true
PYTHON="${PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

"$PYTHON" -m venv "$VENV_DIR"
"$VENV_DIR/bin/python" -m pip install -r "$HERE/requirements.txt" "$@"
"$VENV_DIR/bin/python" -m pip install --no-deps "monailabel==0.8.5"
# Everything the server and BundleInferTask import, so that a missing package shows here and not at start.
"$VENV_DIR/bin/python" -c "
import monai, monailabel, torch
import monailabel.app, monailabel.tasks.infer.bundle
print('monai', monai.__version__, '| monailabel', monailabel.__version__, '| torch', torch.__version__)"
