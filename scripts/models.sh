#!/usr/bin/env bash
# GET /v1/models and /v1/models/{id}: manifests, load state (ready / failed + reason), provider.
set -euo pipefail
source "$(dirname "$0")/_common.sh"

"${CURL[@]}" "$URL/v1/models" -o "$OUT/models.json"
head -c 400 "$OUT/models.json"; echo
# One model; MODEL_ID defaults to the first model id the listing names.
MODEL_ID="${MODEL_ID:-$(grep -o -m 1 '"id":"[^"]*"' "$OUT/models.json" | sed -n '1s/"id":"\(.*\)"/\1/p')}"
"${CURL[@]}" -o "$OUT/model.json" "$URL/v1/models/$MODEL_ID"
head -c 400 "$OUT/model.json"; echo
