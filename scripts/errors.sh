#!/usr/bin/env bash
# What errors look like: {"error": {"code": ..., "message": ..., details}} with a 4xx status.
set -euo pipefail
source "$(dirname "$0")/_common.sh"

show() {  # print status and body without failing the script on the 4xx
  curl -sS -w '  -> HTTP %{http_code}\n' "$@"
}
show "$URL/sample?model=no-such-model"                       # 404 unknown_model, lists the ids
show "$URL/generate?model=$MODEL&digit=10"                   # 422 invalid_parameter, gives the range
show "$URL/sample?model=$MODEL&seed=-1"                      # 422 invalid_parameter
show "$URL/sample?model=$MODEL&n=100000"                     # 422 limit_exceeded
show "$URL/sample?model=$MODEL&digt=3"                       # 422 unknown_parameter
show -H 'Content-Type: text/plain' -d 'x' "$URL/v1/images"   # 415 unsupported_media_type
show -H 'Content-Type: application/json' -d '{"model":' "$URL/v1/images"  # 400 malformed_json
