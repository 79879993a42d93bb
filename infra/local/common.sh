# Shared by infra/local/ray-head.sh and infra/local/mlflow-server.sh (sourced, not run).
#
# Every server these scripts start binds 127.0.0.1 only, runs detached in its own session
# (process group), and is stopped by its PID file: SIGTERM to that PID, then to its process
# group, SIGKILL after a grace period. Nothing here uses `ray stop` (it kills every Ray process on
# the machine, other people's included) or a name-based kill.
#
# A PID alone does not say whose process it is: after the server died, the number can belong to
# anyone. So the PID file records an identity: "PID STARTTIME SERVER_ID", the start time from
# /proc/PID/stat and a random id that start puts into the server's environment
# (GANLIB_SERVER_ID, inherited by every process the server starts). Nothing is signalled unless
# it matches: the leader by start time and id; once the leader is gone, its group while a process
# in it carries the id in /proc/PID/environ, and the processes seen so (PID and start time)
# after that. A PID file without an identity (older scripts) is never acted on.

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

# proc_stat PID -> the fields of /proc/PID/stat after the command name: state ppid pgrp session
# ... (the start time is the 20th); fails when there is no such process
proc_stat() {
  local stat=""
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || [[ -n "$stat" ]] || return 1
  echo "${stat##*) }"
}

# proc_field PID N -> field N of proc_stat (1 state, 3 process group, 4 session, 20 start time)
proc_field() {
  local fields
  fields="$(proc_stat "$1")" || return 1
  echo "$fields" | cut -d' ' -f"$2"
}

# has_server_id PID ID : succeeds when the process's environment holds GANLIB_SERVER_ID=ID
# (readable for our own processes only: anyone else's never matches)
has_server_id() {
  [[ -n "$2" ]] || return 1
  { tr '\0' '\n' <"/proc/$1/environ"; } 2>/dev/null | grep -qxF "GANLIB_SERVER_ID=$2"
}

# read_pidfile PIDFILE -> sets PF_PID, PF_START, PF_ID; fails when the file is missing or holds
# no identity (a bare PID from an older script, or garbage)
read_pidfile() {
  PF_PID="" PF_START="" PF_ID=""
  [[ -f "$1" ]] || return 1
  read -r PF_PID PF_START PF_ID _ <"$1" || true
  [[ "$PF_PID" =~ ^[0-9]+$ && "$PF_START" =~ ^[0-9]+$ && "$PF_ID" =~ ^[0-9a-f-]+$ ]]
}

# leader_is_ours : the process PF_PID is the one start recorded (same start time, our id,
# a running session leader)
leader_is_ours() {
  local fields
  fields="$(proc_stat "$PF_PID")" || return 1
  read -r -a fields <<<"$fields"
  [[ "${fields[0]}" != Z && "${fields[3]}" == "$PF_PID" && "${fields[19]}" == "$PF_START" ]] || return 1
  has_server_id "$PF_PID" "$PF_ID"
}

# GROUP: PID -> start time of the running (not zombie) processes of a group (scan_group sets it).
# Zombies do not count: where PID 1 reaps no orphans (some containers), dead servers stay as zombies.
declare -A GROUP=()

# scan_group PGID : sets GROUP to the group's running processes
scan_group() {
  local entry rest
  GROUP=()
  for entry in /proc/[0-9]*/stat; do
    rest=""
    { read -r rest <"$entry"; } 2>/dev/null || [[ -n "$rest" ]] || continue  # it exited meanwhile
    local pid="${rest%% *}"
    rest="${rest##*) }"
    read -r -a rest <<<"$rest"
    [[ "${rest[0]}" != Z && "${rest[2]}" == "$1" ]] && GROUP[$pid]="${rest[19]}"
  done
  return 0
}

# group_members PGID -> every running process of the group, ours or not
group_members() {
  scan_group "$1"
  local pid
  for pid in "${!GROUP[@]}"; do echo "$pid"; done
}

# OURS: the running processes of the group last found to be our server's (find_ours sets it).
# KNOWN_OURS: PID -> start time of every process ever found to be ours during this command, so a
# process stays ours after its parent exits and it is re-parented out of sight (Ray's workers and
# dashboard modules retitle themselves, which can overwrite the environment /proc shows).
OURS=()
declare -A KNOWN_OURS=()

# find_ours PGID ID : sets OURS to the running processes of the group that are ours. While any
# process of the group carries our id, the whole group is ours: a process can join a group only
# from inside its session, our setsid made that session, and the kernel does not reuse a group's
# number while any process is in it. Once none carries the id, only the processes found before
# (same PID and start time) still count.
find_ours() {
  local pid any_id=0
  scan_group "$1"
  for pid in "${!GROUP[@]}"; do
    if has_server_id "$pid" "$2"; then any_id=1; break; fi
  done
  OURS=()
  for pid in "${!GROUP[@]}"; do
    if ((any_id)) || [[ "${KNOWN_OURS[$pid]:-}" == "${GROUP[$pid]}" ]]; then
      OURS+=("$pid")
      KNOWN_OURS[$pid]="${GROUP[$pid]}"
    fi
  done
}

# ours_alive : a process of our server (the leader, or a process find_ours counts) runs. It scans
# even while the leader lives, so the processes seen then are remembered after it is gone.
ours_alive() {
  find_ours "$PF_PID" "$PF_ID"
  leader_is_ours || ((${#OURS[@]} > 0))
}

# signal_ours SIGNAL : while the recorded leader is ours and alive, its process group is ours
# (a group id cannot be reused while its leader lives): signal the group. Once it is gone,
# signal the processes find_ours counts, one by one.
signal_ours() {
  local pid
  if leader_is_ours; then
    kill "-$1" -- "-$PF_PID" 2>/dev/null || true
    return 0
  fi
  find_ours "$PF_PID" "$PF_ID"
  for pid in "${OURS[@]}"; do
    kill "-$1" "$pid" 2>/dev/null || true
  done
}

# pid_alive PIDFILE -> prints the PID and succeeds when the process the file records is running
pid_alive() {
  read_pidfile "$1" || return 1
  leader_is_ours || return 1
  echo "$PF_PID"
}

# start_detached PIDFILE LOG CMD... : CMD in a new session (its PID is its process group id),
# with a fresh GANLIB_SERVER_ID in its environment; the PID file records PID, start time and id.
start_detached() {
  local pidfile="$1" log="$2" id pid start; shift 2
  mkdir -p "$(dirname "$pidfile")"
  id="$(cat /proc/sys/kernel/random/uuid)"
  GANLIB_SERVER_ID="$id" setsid "$@" </dev/null >"$log" 2>&1 &
  pid=$!
  start="$(proc_field "$pid" 20)" || die "the server exited at once (log: $log)"
  echo "$pid $start $id" >"$pidfile"
  # Until setsid has made it a session leader and exec'd the server, the child still looks like
  # this shell (no id in its environment yet): wait for that, or for its end (wait_http reports).
  PF_PID="$pid" PF_START="$start" PF_ID="$id"
  for _ in $(seq 100); do
    leader_is_ours && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
}

# wait_http URL PIDFILE LOG TIMEOUT : until URL answers (any HTTP status: 401 counts as up)
wait_http() {
  local url="$1" pidfile="$2" log="$3" timeout="$4" deadline=$((SECONDS + $4))
  while ((SECONDS < deadline)); do
    if ! pid_alive "$pidfile" >/dev/null; then
      tail -n 40 "$log" >&2 || true
      stop_group "$pidfile" 5  # whatever it started and left behind
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
# Only what the PID file's identity matches is signalled (see the top of this file); a PID file
# that matches nothing is stale and is removed.
stop_group() {
  local pidfile="$1" grace="${2:-30}" deadline
  if ! read_pidfile "$pidfile"; then
    if [[ -f "$pidfile" ]]; then
      echo "warning: $pidfile records no identity (PID $(head -c 40 "$pidfile")): not signalling anything;" \
        "if that server is still running, stop it yourself" >&2
    fi
    rm -f "$pidfile"
    return 0
  fi
  if ! ours_alive; then
    rm -f "$pidfile"  # stale: PID $PF_PID is gone or belongs to another process now
    return 0
  fi
  if leader_is_ours; then
    kill -TERM "$PF_PID" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while ours_alive && ((SECONDS < deadline)); do sleep 0.5; done
  fi
  if ours_alive; then
    signal_ours TERM
    deadline=$((SECONDS + 5))
    while ours_alive && ((SECONDS < deadline)); do sleep 0.5; done
  fi
  if ours_alive; then
    signal_ours KILL
    deadline=$((SECONDS + 10))
    while ours_alive && ((SECONDS < deadline)); do sleep 0.5; done
  fi
  local others
  others="$(group_members "$PF_PID" | tr '\n' ' ')"
  if [[ -n "$others" ]]; then
    echo "warning: process group $PF_PID still has processes that cannot be shown to be this server's" \
      "(PIDs $others); not signalled" >&2
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
