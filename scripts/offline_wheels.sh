#!/usr/bin/env bash
# Download the pure-Python wheels this project needs beyond torch, for a GPU machine without internet access
# (air-gapped clusters, offline compute nodes) that already has torch, numpy, pyyaml, tqdm and tensorboard.
#
#   scripts/offline_wheels.sh [folder] [python version]       # defaults: wheels 3.12
#
# Then, on the offline machine, from the repository root:
#   python3 -m pip install --no-index --no-deps --target /tmp/s3d_site wheels/*.whl
#   PYTHONPATH=/tmp/s3d_site:. python3 -m custom_nets gpu_check
#
# Pinned to the versions CI tests. itk (only needed for non-NIfTI formats) is left out: its wheels are large and
# platform specific; add it to PACKAGES if your data are .mha/.nrrd/.mgz.
set -euo pipefail
folder="${1:-wheels}"
python_version="${2:-3.12}"
PACKAGES=(monai==1.6.1 pytorch-ignite==0.5.5 nibabel==5.4.2 fire==0.7.1 termcolor==3.3.0
          dynamic-network-architectures==0.4.4)
mkdir -p "$folder"
python3 -m pip download --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$folder" "${PACKAGES[@]}"
ls -1 "$folder"
