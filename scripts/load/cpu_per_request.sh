#!/usr/bin/env bash
# Load a server with wrk (64 connections, a different seed per request) and report requests/s,
# latency percentiles and the server process's CPU time per request -- the figure that stays
# comparable on a machine shared with other jobs.
# usage: scripts/load/cpu_per_request.sh PORT PID [SECONDS]     (needs wrk: apt-get install wrk)
set -euo pipefail
port=$1; pid=$2; secs=${3:-8}
t0=$(awk '{print $14+$15}' /proc/$pid/stat)
out=$(wrk -t2 -c64 -d${secs}s -s "$(dirname "$0")/wrk_sample.lua" "http://127.0.0.1:$port")
t1=$(awk '{print $14+$15}' /proc/$pid/stat)
reqs=$(echo "$out" | awk '/requests in/{print $1}')
rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
lat=$(echo "$out" | grep p50)
tck=$(getconf CLK_TCK)
echo "port $port: $rps req/s, $lat, server CPU $(python3 -c "print(round(($t1-$t0)/$tck*1000/$reqs, 3))") ms/request"
