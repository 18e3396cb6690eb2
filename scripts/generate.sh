#!/usr/bin/env bash
# GET /generate: the image of a class (digit= by index, class= by name), as PNG or JSON.
set -euo pipefail
source "$(dirname "$0")/_common.sh"

# One image of class 3 (seed fixed, so the same bytes every time), headers shown.
"${CURL[@]}" -D - -o "$OUT/generate-3.png" "$URL/generate?model=$MODEL&digit=3&seed=42"
# Sixteen images of class 3 as a 4x4 grid, each pixel scaled to 4x4.
"${CURL[@]}" -o "$OUT/generate-3-grid.png" "$URL/generate?model=$MODEL&digit=3&seed=42&n=16&scale=4"
# A class by name (case-insensitive; for Fashion e.g. class=bag or class=Ankle%20boot).
"${CURL[@]}" -o "$OUT/generate-class.png" "$URL/generate?model=$MODEL&class=3&seed=7"
# JSON: base64 PNGs with their seeds and labels.
"${CURL[@]}" -o "$OUT/generate.json" "$URL/generate?model=$MODEL&digit=3&seed=42&n=2&format=json"
head -c 300 "$OUT/generate.json"; echo
echo "wrote $OUT/generate-3.png $OUT/generate-3-grid.png $OUT/generate-class.png"
