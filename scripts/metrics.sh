#!/usr/bin/env bash
# GET /metrics: Prometheus text; the service's own series start with imagegen_.
set -euo pipefail
source "$(dirname "$0")/_common.sh"

"${CURL[@]}" "$URL/metrics" -o "$OUT/metrics.txt"
grep -m 20 -E '^imagegen_(requests_total|batch_size_count|images_total|model_ready|queue_depth)' "$OUT/metrics.txt"
