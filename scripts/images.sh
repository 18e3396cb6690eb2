#!/usr/bin/env bash
# POST /v1/images: a JSON batch of seeds and/or labels -> base64 PNGs (JSON) or one NPY array.
set -euo pipefail
source "$(dirname "$0")/_common.sh"

# Seeds and labels (index or class name), PNGs as base64 in JSON.
"${CURL[@]}" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$MODEL\", \"seeds\": [1, 2, 3], \"labels\": [0, 1, \"2\"], \"scale\": 2}" \
  "$URL/v1/images" -o "$OUT/images.json"
head -c 200 "$OUT/images.json"; echo
# Bulk: float32 array (N, C, H, W) in [0, 1] as application/x-npy (numpy.load reads it).
"${CURL[@]}" -H 'Content-Type: application/json' \
  -d "{\"model\": \"$MODEL\", \"seeds\": [10, 11, 12, 13], \"format\": \"npy\"}" \
  "$URL/v1/images" -o "$OUT/images.npy"
echo "wrote $OUT/images.json $OUT/images.npy"
