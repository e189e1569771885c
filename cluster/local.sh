#!/usr/bin/env bash
# A multi-node Ray cluster on this machine: a head and N workers joined on 127.0.0.1, each its own raylet with
# its own logical CPUs and logical (fractional-friendly) GPUs, so sweeps run here as they run on a real cluster.
#
#   cluster/local.sh start [WORKERS]      # default 2 workers with CPUS=1 and GPUS=1 (logical) each
#   . /tmp/pdd-cluster/env                # the token and addresses for pdd and ray clients in this shell
#   pdd sweep run sweeps/smoke.yaml --address 127.0.0.1:6380
#   pdd sweep submit sweeps/smoke.yaml    # to the job server at http://127.0.0.1:8265
#   cluster/local.sh stop                 # stops every node by the PID recorded at start
#
# Reached only from this machine: the dashboard and job server listen on 127.0.0.1 (from elsewhere, tunnel:
# ssh -L 8265:127.0.0.1:8265 HOST). Ray's own gRPC ports listen on every interface (Ray maps 127.0.0.1 to the
# host's address; the switch that keeps it on loopback, as `pdd sweep run` does, refuses worker nodes), so token
# auth is on: RAY_AUTH_MODE=token with a fresh token in $PDD_CLUSTER_DIR/auth_token.
# RAY_AUTH_MODE=disabled cluster/local.sh start turns it off. Each node is one `ray start --block`; its PID is
# recorded, and stopping it (SIGTERM) stops the node's processes. Nothing here runs `ray stop` or kills by name.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv_bin=${VENV_BIN:-$here/.venv/bin}
state=${PDD_CLUSTER_DIR:-/tmp/pdd-cluster}   # short: Ray's socket paths under it must fit in 107 bytes
gcs_port=${GCS_PORT:-6380}
dashboard_port=${DASHBOARD_PORT:-8265}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
export RAY_USAGE_STATS_ENABLED=0
export PATH="$venv_bin:$PATH"                 # a submitted job's `python` is this venv's

free_port() {
  python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# node NAME ARGS...: one `ray start --block` in the background, recorded as "PID NAME"; returns once it has joined.
node() {
  local name=$1 pid
  shift
  nohup ray start "$@" --node-ip-address=127.0.0.1 --temp-dir="$state/$name" \
    --dashboard-agent-listen-port="$(free_port)" --dashboard-agent-grpc-port="$(free_port)" \
    --metrics-export-port="$(free_port)" --runtime-env-agent-port="$(free_port)" \
    --disable-usage-stats --block >"$state/$name.log" 2>&1 &
  pid=$!
  echo "$pid $name" >>"$state/pids"
  for _ in $(seq 240); do
    grep -qs "Ray runtime started" "$state/$name.log" && return 0
    kill -0 "$pid" 2>/dev/null || { echo "$name did not start; see $state/$name.log" >&2; return 1; }
    sleep 0.5
  done
  echo "$name did not start within 2 minutes; see $state/$name.log" >&2
  return 1
}

start() {
  local workers=${1:-2} i
  if [ -s "$state/pids" ]; then
    echo "a local cluster is recorded in $state/pids; stop it first: $0 stop" >&2
    exit 1
  fi
  mkdir -p "$state"
  chmod 700 "$state"
  if [ "$RAY_AUTH_MODE" = token ]; then
    python -c 'import secrets; print(secrets.token_urlsafe(32))' >"$state/auth_token"
    chmod 600 "$state/auth_token"
    export RAY_AUTH_TOKEN_PATH="$state/auth_token"
  fi
  trap 'echo "start failed; stopping what started" >&2; stop' ERR
  node head --head --port="$gcs_port" --dashboard-host=127.0.0.1 --dashboard-port="$dashboard_port" \
    --ray-client-server-port="$(free_port)" --num-cpus=0 --num-gpus=0   # the head only runs drivers
  for i in $(seq "$workers"); do
    node "worker$i" --address="127.0.0.1:$gcs_port" --num-cpus="${CPUS:-1}" --num-gpus="${GPUS:-1}"
  done
  trap - ERR
  {
    echo "export RAY_AUTH_MODE=$RAY_AUTH_MODE"
    [ "$RAY_AUTH_MODE" = token ] && echo "export RAY_AUTH_TOKEN_PATH=$state/auth_token"
    echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$dashboard_port"
  } >"$state/env"
  echo "head and $workers workers on 127.0.0.1 (GCS port $gcs_port, jobs at http://127.0.0.1:$dashboard_port)"
  echo "in a shell that talks to it: . $state/env"
}

stop() {
  local pid name left
  if [ ! -s "$state/pids" ]; then
    echo "no local cluster recorded in $state"
    return 0
  fi
  while read -r pid name; do
    kill -TERM "$pid" 2>/dev/null && echo "stopping $name (pid $pid)"
  done <"$state/pids"
  for _ in $(seq 60); do
    left=0
    while read -r pid name; do kill -0 "$pid" 2>/dev/null && left=1; done <"$state/pids"
    [ "$left" = 0 ] && break
    sleep 0.5
  done
  while read -r pid name; do
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" && echo "killed $name (pid $pid)"
  done <"$state/pids"
  rm -f "$state/pids"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start [WORKERS] | stop" >&2; exit 2 ;;
esac
