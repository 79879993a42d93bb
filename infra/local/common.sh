# Shared by infra/local/ray-head.sh and infra/local/mlflow-server.sh (sourced, not run).
#
# Every server these scripts start binds 127.0.0.1 only, runs detached in its own session
# (process group), and is stopped by the PID in its PID file: SIGTERM to that process group,
# SIGKILL after a grace period. Nothing here uses `ray stop` (it kills every Ray process on the
# machine, other people's included) or a name-based kill.

set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# State of the local servers: PID files, logs, the Ray token. .run/ is gitignored.
RUN_DIR="${GANLIB_RUN_DIR:-$REPO_DIR/.run}"
# The interpreter whose ray / mlflow the servers run: the project's virtualenv by default.
if [[ -z "${GANLIB_PYTHON:-}" ]]; then
  if [[ -x "$REPO_DIR/.venv/bin/python" ]]; then GANLIB_PYTHON="$REPO_DIR/.venv/bin/python"; else GANLIB_PYTHON="$(command -v python3)"; fi
fi
BIN_DIR="$(dirname "$GANLIB_PYTHON")"
# The only address any server here listens on. Not configurable on purpose: reach a server
# from elsewhere through an SSH tunnel (docs/cluster.md), never by binding a public address.
BIND_HOST=127.0.0.1

export RAY_USAGE_STATS_ENABLED=0
export MLFLOW_DISABLE_TELEMETRY=true
export PATH="$BIN_DIR:$PATH"

die() { echo "error: $*" >&2; exit 1; }

# pid_alive PIDFILE -> prints the PID and succeeds when that process is running
pid_alive() {
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# start_detached PIDFILE LOG CMD... : CMD in a new session (its PID is its process group id)
start_detached() {
  local pidfile="$1" log="$2"; shift 2
  mkdir -p "$(dirname "$pidfile")"
  setsid "$@" </dev/null >"$log" 2>&1 &
  echo $! >"$pidfile"
}

# wait_http URL PIDFILE LOG TIMEOUT : until URL answers (any HTTP status: 401 counts as up)
wait_http() {
  local url="$1" pidfile="$2" log="$3" timeout="$4" deadline=$((SECONDS + $4))
  while ((SECONDS < deadline)); do
    if ! pid_alive "$pidfile" >/dev/null; then
      tail -n 40 "$log" >&2 || true
      rm -f "$pidfile"
      die "the server exited during start-up (log: $log)"
    fi
    if "$GANLIB_PYTHON" - "$url" <<'PY'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass  # it answered
except OSError:
    sys.exit(1)
PY
    then return 0; fi
    sleep 1
  done
  tail -n 40 "$log" >&2 || true
  stop_group "$pidfile" 10
  die "$url did not answer within $timeout s (log: $log)"
}

# stop_group PIDFILE [GRACE] : SIGTERM the process group of the PID, SIGKILL after GRACE s
stop_group() {
  local pidfile="$1" grace="${2:-30}" pid deadline
  if ! pid="$(pid_alive "$pidfile")"; then
    rm -f "$pidfile"
    return 0
  fi
  # Only a session we started: its leader is the PID in the file.
  if [[ "$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f4)" != "$pid" ]]; then
    die "PID $pid in $pidfile is not the session leader this script started; not touching it"
  fi
  kill -TERM -- "-$pid" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
  if kill -0 -- "-$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$pidfile"
}
