#!/usr/bin/env bash
# Runs Stock Bazaar across five "hosts" on one machine: network namespaces joined by veth
# pairs to a bridge, each with its own address. Catalog, three order replicas and the
# front-end get one host each; bazaar-client runs from the root namespace against the
# front-end's address, then everything is torn down (also on failure or Ctrl-C).
#
# Needs root (ip netns, ip link) and iproute2 (scripts/deps.sh installs it).
# Usage: scripts/netns-cluster.sh [BIN_DIR] [client flags...]
#   BIN_DIR defaults to build/bin; client flags default to a short verified run.
# Exit status: the client's (0 = every order verified), 2 = cannot create namespaces.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/build/bin}
shift || true
client_flags=("$@")
[ ${#client_flags[@]} -gt 0 ] || client_flags=(--sessions 4 --iterations 100 --p 0.5 --seed 1)

tag="bz$$"                       # unique per run, so parallel runs do not collide
subnet=${BAZAAR_NETNS_SUBNET:-10.$((200 + $$ % 50)).$(($$ % 250))}
bridge="${tag}br"
work=$(mktemp -d /tmp/bazaar-netns.XXXXXX)
hosts=(catalog order1 order2 order3 frontend)
pids=()

cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  for i in "${!hosts[@]}"; do ip netns del "${tag}h$i" 2>/dev/null; done
  ip link del "$bridge" 2>/dev/null
  [ -n "${BAZAAR_NETNS_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT INT TERM

addr_of() { echo "$subnet.$((11 + $1))"; }

# Builds the bridge and the five hosts; any failure here means this machine (or container)
# cannot do network namespaces, which is a skip, not a test failure.
setup_hosts() {
  ip link add "$bridge" type bridge || return 1
  ip addr add "$subnet.1/24" dev "$bridge" || return 1
  ip link set "$bridge" up || return 1
  for i in "${!hosts[@]}"; do
    ns="${tag}h$i"
    ip netns add "$ns" || return 1
    ip link add "${tag}v$i" type veth peer name eth0 netns "$ns" || return 1
    ip link set "${tag}v$i" master "$bridge" up || return 1
    ip -n "$ns" addr add "$(addr_of "$i")/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up || return 1
    ip -n "$ns" link set lo up || return 1
    ip -n "$ns" route add default via "$subnet.1" || return 1
  done
}

if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null || ! setup_hosts 2>"$work/setup.log"; then
  echo "netns-cluster: needs root and network-namespace support (ip netns, veth, bridge);" \
       "skipping: $(tail -1 "$work/setup.log" 2>/dev/null)" >&2
  exit 2
fi

cat >"$work/cluster.conf" <<CONF
[cluster]
data_dir = $work/data
secret = netns-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
log_level = warn
[catalog]
listen = $(addr_of 0):9001
stocks = $root/config/stocks.csv
[frontend]
listen = $(addr_of 4):8080
[order.1]
listen = $(addr_of 1):9101
[order.2]
listen = $(addr_of 2):9102
[order.3]
listen = $(addr_of 3):9103
CONF

start() { # host-index, log name, command...
  local i=$1 name=$2
  shift 2
  ip netns exec "${tag}h$i" "$@" 2>"$work/$name.log" &
  pids+=($!)
}
start 0 catalog "$bin/bazaar-catalog" --config "$work/cluster.conf"
for id in 1 2 3; do
  start "$id" "order$id" "$bin/bazaar-order" --config "$work/cluster.conf" --id "$id"
done
start 4 frontend "$bin/bazaar-frontend" --config "$work/cluster.conf"

# Ready when the front-end has a leader (it can reach the replicas across the bridge).
api="http://$(addr_of 4):8080"
for _ in $(seq 200); do
  if curl -sf --max-time 1 "$api/status" | grep -q '"leader":[0-9]'; then break; fi
  sleep 0.1
done
curl -sf --max-time 1 "$api/status" | grep -q '"leader":[0-9]' || {
  echo "netns-cluster: cluster did not come up; logs in $work" >&2
  BAZAAR_NETNS_KEEP=1
  exit 1
}
echo "netns-cluster: catalog $(addr_of 0), replicas $(addr_of 1)-$(addr_of 3), front-end $api"
"$bin/bazaar-client" --url "$api" --stocks-file "$root/config/stocks.csv" "${client_flags[@]}"
