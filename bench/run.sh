#!/usr/bin/env bash
# bench/run.sh - `make bench`: trades against a 3-member etcd (both replication modes), order
# queries and cache hits/misses against nginx, in one run; writes the ratio table into
# bench/README.md.
#
#   make bench                      (builds build/ first; ~13 minutes on 2 CPUs)
#   BIN_DIR=build-dev/bin bash bench/run.sh
#   DURATION=5 make bench           (seconds per measured wrk run, default 10)
#   ROUNDS=5 make bench             (round-robin rounds per case, default 3)
#   DURATION=3 ROUNDS=1 make bench  (a quick pass, ~3 minutes, to iterate with)
#   CATCHUP=100000 make bench       (also the catch-up of 100k missed orders, per mode, ~+4 min)
#
# Needs wrk, nginx and etcd (scripts/deps.sh installs them). bench/bench.py does the work and
# stops what it starts by PID; this wrapper forwards SIGINT/SIGTERM/SIGHUP to it (by PID) and
# waits, so every exit path cleans up.
set -u
cd "$(dirname "$0")/.." || exit 1

BIN_DIR=${BIN_DIR:-build/bin}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CATCHUP=${CATCHUP:-0}
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
if [ "$CATCHUP" != 0 ]; then
  command="CATCHUP=$CATCHUP $command"
fi

python3 bench/bench.py --bin-dir "$BIN_DIR" --duration "$DURATION" --rounds "$ROUNDS" \
  --catchup "$CATCHUP" --command "$command" "$@" &
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
