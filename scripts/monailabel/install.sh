#!/usr/bin/env bash
# Build a separate virtual environment with MONAI Label that can serve this project's exported bundles.
#
#   scripts/monailabel/install.sh [VENV_DIR] [extra pip requirements ...]
#
# VENV_DIR defaults to .venv-monailabel. The pins are what works with monailabel 0.8.5 (the newest release):
#   monai==1.5.2         under monai 1.6.x MONAI Label's inference fails in Spacingd (it stores image_path as a
#                        string that monai 1.6 updates as a dict);
#   pydicom<3, pynetdicom<3, dicomweb-client<0.60
#                        with pydicom 3 the server dies at start.
# monailabel needs torchvision, so pip installs the torch/torchvision pair it resolves (on x86-64 Linux a CUDA
# build, about 8 GB in all) and numpy 1.26. To keep a CPU-only torch, name it as extra requirements, e.g.
#   scripts/monailabel/install.sh .venv-monailabel torch==2.13.0 torchvision==0.28.0 \
#       --extra-index-url https://download.pytorch.org/whl/cpu
# The project itself (custom_nets) is NOT installed there: exported bundles do not need it.
set -euo pipefail

VENV_DIR="${1:-.venv-monailabel}"
shift || true
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m venv "$VENV_DIR"
"$VENV_DIR/bin/python" -m pip install \
    "monailabel==0.8.5" \
    "monai[nibabel,itk,ignite,fire,pyyaml,tqdm]==1.5.2" \
    "pydicom<3" "pynetdicom<3" "dicomweb-client<0.60" \
    "$@"
"$VENV_DIR/bin/python" -c "import monai, monailabel, torch; print('monai', monai.__version__, '| monailabel', monailabel.__version__, '| torch', torch.__version__)"
