#!/bin/sh
# The compose services' entry point: runs the command (`imagegen serve`) with IMAGEGEN_API_KEY
# read from the file deploy/compose/first-start.sh wrote. Without a key it refuses to start, so
# the stack never serves its API to the open network unauthenticated.
#
#   serve-with-key.sh <key file> <command...>
set -eu

key_file=$1
shift
if [ ! -s "$key_file" ]; then
    echo "imagegen: no API key in $key_file (made by the compose service 'secrets');" \
        "refusing to serve without one" >&2
    exit 78  # EX_CONFIG
fi
IMAGEGEN_API_KEY=$(cat "$key_file")
export IMAGEGEN_API_KEY
exec "$@"
