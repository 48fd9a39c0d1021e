#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (fuzzer + ASan + UBSan) and runs each for
# SECONDS seconds (default 60) from its seed corpus. Prints executions per target.
# Usage: tests/fuzz/run.sh [SECONDS]     (make fuzz FUZZ_SECONDS=N)
set -euo pipefail
seconds=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${FUZZ_OUT:-$root/build-fuzz}
cc=${FUZZ_CC:-clang-14}
command -v "$cc" >/dev/null || cc=clang
mkdir -p "$out"

flags="-std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
incs="-I$root/src/common -I$root/src/order $(pkg-config --cflags jansson inih)"
libs="$(pkg-config --libs jansson inih)"
common="$root/src/common/util.c $root/src/common/error.c $root/src/common/log.c"
declare -A extra=(
  [trade]="$root/src/common/trade.c"
  [parse]="$root/src/common/trade.c"
  [config]="$root/src/common/config.c"
  [msg]="$root/src/common/trade.c $root/src/common/msg.c"
  [raftcodec]="$root/src/common/trade.c $root/src/order/raftcodec.c"
)

status=0
for t in trade parse config msg raftcodec; do
  bin="$out/fuzz_$t"
  # shellcheck disable=SC2086
  $cc $flags $incs -o "$bin" "$here/fuzz_$t.c" $common ${extra[$t]} $libs
  work="$out/corpus_$t"
  mkdir -p "$work"
  log="$out/fuzz_$t.log"
  if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       "$work" "$here/corpus/$t" >"$log" 2>&1; then
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "fuzz_$t: ${execs:-?} executions in ${seconds}s, no crash"
  else
    echo "fuzz_$t: FAILED, see $log" >&2
    tail -40 "$log" >&2
    status=1
  fi
done
exit $status
