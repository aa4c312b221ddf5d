#!/usr/bin/env bash
# Send a NIfTI image to a running MONAI Label server and save the returned label map.
#
#   scripts/monailabel/infer.sh IMAGE.nii.gz MODEL OUTPUT.nii.gz [SERVER] [PARAMS]
#
# MODEL is the bundle folder's name (GET $SERVER/info/ lists the models). SERVER defaults to http://127.0.0.1:8000.
# PARAMS is the request's JSON parameters, default {}: '{"mirroring": true}' or '{"mirroring": false}' switches
# test-time mirroring (default: on when the server has a GPU, off on a CPU, where it costs 8 times the time).
# A model with several modalities takes one 4D NIfTI with the modalities on the last axis.
set -euo pipefail

IMAGE="$1"
MODEL="$2"
OUTPUT="$3"
SERVER="${4:-http://127.0.0.1:8000}"
PARAMS="${5:-}"
[ -n "$PARAMS" ] || PARAMS="{}"

curl --fail --silent --show-error -X POST "$SERVER/infer/$MODEL?output=image" \
    -F "params=$PARAMS" -F "file=@$IMAGE" -o "$OUTPUT"
echo "label map written to $OUTPUT"
