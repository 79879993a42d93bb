#!/usr/bin/env bash
# A local Ray head on 127.0.0.1 with token authentication, stopped by its PID file.
#
#   infra/local/ray-head.sh start    # prints the address; writes .run/ray/{head.pid,head.log,auth_token,env}
#   source .run/ray/env               # RAY_ADDRESS, RAY_API_SERVER_ADDRESS, RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH,
#                                     # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the head's single-machine mode)
#   ray job submit --working-dir . -- python sweeps/wgan_clip.py --preset smoke
#   infra/local/ray-head.sh stop     # SIGTERM to the head's process group (never `ray stop`)
#   infra/local/ray-head.sh status
#
# Settings (environment): GANLIB_RUN_DIR (default <repo>/.run), RAY_HEAD_PORT (GCS, 6379),
# RAY_DASHBOARD_PORT (dashboard + Jobs API, 8265), RAY_DASHBOARD_AGENT_PORT (52365: the
# agent that runs submitted jobs; two heads on one machine need different ones),
# RAY_CLIENT_SERVER_PORT (Ray Client, 10001), RAY_HEAD_NUM_CPUS / RAY_HEAD_NUM_GPUS
# (default: what Ray detects), GANLIB_PYTHON (the interpreter whose `ray` runs; default .venv),
# GANLIB_STORAGE_PATH (the Tune storage of the jobs it runs; default <repo>/ray_results).
# Every port of the head (GCS, raylet, dashboard, Jobs API, agents, Ray Client) listens on
# 127.0.0.1 only, and Ray's token authentication is on; from another machine use an SSH tunnel
# (docs/cluster.md).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STATE="$RUN_DIR/ray"
PIDFILE="$STATE/head.pid"
LOG="$STATE/head.log"
TOKEN="$STATE/auth_token"
ENVFILE="$STATE/env"
PORT="${RAY_HEAD_PORT:-6379}"
DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
AGENT_PORT="${RAY_DASHBOARD_AGENT_PORT:-52365}"
CLIENT_PORT="${RAY_CLIENT_SERVER_PORT:-10001}"

start() {
  if pid="$(pid_alive "$PIDFILE")"; then die "a Ray head started here is already running (PID $pid); stop it first"; fi
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  # `ray start` does not create a token under RAY_AUTH_MODE=token (only ray.init() does): make
  # one, readable by this user only, and keep it across restarts so clients keep working.
  if [[ ! -s "$TOKEN" ]]; then
    (umask 077 && "$GANLIB_PYTHON" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$TOKEN")
  fi
  chmod 600 "$TOKEN"
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$TOKEN"
  # Ray 2.60 turns --node-ip-address 127.0.0.1 into the machine's address and then listens on
  # all interfaces (GCS, raylet, agents). Its single-machine mode (the default on macOS and
  # Windows) keeps the node IP on the loopback: every port of the head then listens on
  # 127.0.0.1 only (tests/test_infra_local_scripts.py checks it). No other machine can join.
  export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
  # A job submitted with --working-dir runs from Ray's unpacked copy of the repo: without this its
  # Tune storage would default to that copy's ray_results, in Ray's temporary folder, where a
  # --resume from the next submission (another copy) finds nothing. Jobs inherit the head's env.
  export GANLIB_STORAGE_PATH="${GANLIB_STORAGE_PATH:-$REPO_DIR/ray_results}"
  local args=(start --head --block --node-ip-address "$BIND_HOST" --port "$PORT"
              --include-dashboard true --dashboard-host "$BIND_HOST" --dashboard-port "$DASHBOARD_PORT"
              --dashboard-agent-listen-port "$AGENT_PORT" --ray-client-server-port "$CLIENT_PORT"
              --disable-usage-stats)
  [[ -n "${RAY_HEAD_NUM_CPUS:-}" ]] && args+=(--num-cpus "$RAY_HEAD_NUM_CPUS")
  [[ -n "${RAY_HEAD_NUM_GPUS:-}" ]] && args+=(--num-gpus "$RAY_HEAD_NUM_GPUS")
  start_detached "$PIDFILE" "$LOG" "$BIN_DIR/ray" "${args[@]}"
  wait_http "http://$BIND_HOST:$DASHBOARD_PORT/api/version" "$PIDFILE" "$LOG" "${RAY_HEAD_START_TIMEOUT:-120}"
  cat >"$ENVFILE" <<ENV
export RAY_ADDRESS=$BIND_HOST:$PORT
export RAY_API_SERVER_ADDRESS=http://$BIND_HOST:$DASHBOARD_PORT
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$TOKEN
export GANLIB_STORAGE_PATH=$GANLIB_STORAGE_PATH
# A driver joining from outside \`ray job submit\` keeps the head's single-machine mode too, or Ray
# rewrites 127.0.0.1 into the machine's address and finds no GCS there.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
ENV
  echo "Ray head up (PID $(cut -d" " -f1 "$PIDFILE")): GCS $BIND_HOST:$PORT, dashboard / Jobs API http://$BIND_HOST:$DASHBOARD_PORT"
  echo "Clients: source $ENVFILE"
}

main "Ray head" "$PIDFILE" "$ENVFILE" "${RAY_HEAD_STOP_TIMEOUT:-30}" "${1:-}"
