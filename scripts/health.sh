#!/usr/bin/env bash
# GET /healthz (liveness) and /readyz (models loaded and warmed; 503 while loading).
set -euo pipefail
source "$(dirname "$0")/_common.sh"

"${CURL[@]}" "$URL/healthz"; echo
"${CURL[@]}" "$URL/readyz"; echo
