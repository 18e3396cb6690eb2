#!/usr/bin/env bash
# GET /sample: images from a seed; image i of n uses seed+i (class seed % classes unless given).
set -euo pipefail
source "$(dirname "$0")/_common.sh"

"${CURL[@]}" -o "$OUT/sample-42.png" "$URL/sample?model=$MODEL&seed=42"
"${CURL[@]}" -o "$OUT/sample-grid.png" "$URL/sample?model=$MODEL&seed=42&n=16&scale=4"
# No seed: the server draws one and returns it in X-Seed.
"${CURL[@]}" -D "$OUT/sample-headers.txt" -o "$OUT/sample-random.png" "$URL/sample?model=$MODEL"
grep -i '^x-seed' "$OUT/sample-headers.txt"
# Conditional GET: the same request with its ETag answers 304 Not Modified.
etag=$("${CURL[@]}" -D - -o /dev/null "$URL/sample?model=$MODEL&seed=42" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
"${CURL[@]}" -o /dev/null -w "If-None-Match -> %{http_code}\n" -H "If-None-Match: $etag" "$URL/sample?model=$MODEL&seed=42"
echo "wrote $OUT/sample-42.png $OUT/sample-grid.png $OUT/sample-random.png"
