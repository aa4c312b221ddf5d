#!/usr/bin/env bash
# Send a NIfTI image to a running MONAI Label server and save the returned label map.
#
#   scripts/monailabel/infer.sh IMAGE.nii.gz MODEL OUTPUT.nii.gz [SERVER]
#
# MODEL is the bundle folder's name (GET $SERVER/info/ lists the models). SERVER defaults to http://127.0.0.1:8000.
# A model with several modalities takes one 4D NIfTI with the modalities on the last axis.
set -euo pipefail

IMAGE="$1"
MODEL="$2"
OUTPUT="$3"
SERVER="${4:-http://127.0.0.1:8000}"

curl --fail --silent --show-error -X POST "$SERVER/infer/$MODEL?output=image" \
    -F "params={}" -F "file=@$IMAGE" -o "$OUTPUT"
echo "label map written to $OUTPUT"
