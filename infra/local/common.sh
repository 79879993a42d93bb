# Shared by infra/local/ray-head.sh and infra/local/mlflow-server.sh (sourced, not run).
#
# Every server these scripts start binds 127.0.0.1 only, runs detached in its own session
# (process group), and is stopped by the PID in its PID file: SIGTERM to that PID, then to its
# process group, SIGKILL after a grace period. Nothing here uses `ray stop` (it kills every Ray process on the
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

# proc_state PID -> the process state letter (R, S, Z, ...); fails when there is no such process
proc_state() {
  local rest
  rest="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null)" || return 1
  echo "${rest%% *}"
}

# group_alive PGID : succeeds while a process of the group is running. Zombies do not count:
# where PID 1 reaps no orphans (some containers), dead servers stay as zombies.
group_alive() {
  # (cat fails when a process exits mid-read: never let that decide, whatever pipefail says)
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | sed 's/.*) //' | awk -v g="$1" '$3 == g && $1 != "Z" { found = 1 } END { exit !found }'
}

# pid_alive PIDFILE -> prints the PID and succeeds when that process is running
pid_alive() {
  local pid state
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  state="$(proc_state "$pid")" || return 1
  [[ "$state" != Z ]] || return 1
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

# stop_group PIDFILE [GRACE] : SIGTERM to the PID (the session leader: `ray start --block` then
# shuts its node down in order, `mlflow server` its workers), then whatever of its process group
# is still running after GRACE s gets SIGTERM, and SIGKILL 5 s later. (SIGTERM to the whole
# group at once makes `ray start` wait for a GCS that is shutting down too: 30 s instead of 3.)
stop_group() {
  local pidfile="$1" grace="${2:-30}" pid deadline
  if ! pid="$(pid_alive "$pidfile")"; then
    if [[ -f "$pidfile" && "$(cat "$pidfile")" =~ ^[0-9]+$ ]] && group_alive "$(cat "$pidfile")"; then
      kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true  # a leftover of a leader that died
    fi
    rm -f "$pidfile"
    return 0
  fi
  # Only a session we started: its leader is the PID in the file.
  if [[ "$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f4)" != "$pid" ]]; then
    die "PID $pid in $pidfile is not the session leader this script started; not touching it"
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
  if group_alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    deadline=$((SECONDS + 5))
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
  fi
  if group_alive "$pid"; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
  fi
  rm -f "$pidfile"
}

# main NAME PIDFILE ENVFILE STOP_TIMEOUT COMMAND : the start|stop|status command line of a
# server script, whose own start() starts the server.
main() {
  local name="$1" pidfile="$2" envfile="$3" stop_timeout="$4" pid
  case "${5:-}" in
    start) start ;;
    stop) stop_group "$pidfile" "$stop_timeout"; rm -f "$envfile"; echo "$name stopped" ;;
    status)
      if pid="$(pid_alive "$pidfile")"; then echo "running (PID $pid)"; else echo "not running"; exit 3; fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
  esac
}
