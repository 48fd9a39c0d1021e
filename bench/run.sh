#!/usr/bin/env bash
# bench/run.sh - the lookup benchmark: bazaar-frontend vs nginx, cache hits and misses.
#
#   make bench                      (builds build/ first)
#   BIN_DIR=build-dev/bin bash bench/run.sh
#   DURATION=5 bash bench/run.sh    (seconds per measured wrk run, default 10)
#   ROUNDS=5 bash bench/run.sh      (alternating ours/nginx rounds per case, default 3)
#
# Needs wrk and nginx (scripts/deps.sh installs both). Writes bench/README.md.
# bench/bench.py does the work and stops what it starts by PID; this wrapper forwards
# SIGINT/SIGTERM/SIGHUP to it (by PID) and waits, so every exit path cleans up.
set -u
cd "$(dirname "$0")/.." || exit 1

BIN_DIR=${BIN_DIR:-build/bin}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
if [ "$BIN_DIR" = build/bin ]; then
  command="make bench"
else
  command="BIN_DIR=$BIN_DIR bash bench/run.sh"
fi
if [ "$DURATION" != 10 ]; then
  command="DURATION=$DURATION $command"
fi
if [ "$ROUNDS" != 3 ]; then
  command="ROUNDS=$ROUNDS $command"
fi

python3 bench/bench.py --bin-dir "$BIN_DIR" --duration "$DURATION" --rounds "$ROUNDS" --command "$command" "$@" &
pid=$!

stop() {
  trap - INT TERM HUP
  kill -TERM "$pid" 2>/dev/null
  wait "$pid"
  exit 130
}
trap stop INT TERM HUP

wait "$pid"
rc=$?
# wait returns early (>128) when a trapped signal arrives; the trap then exits.
exit "$rc"
