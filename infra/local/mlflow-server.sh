#!/usr/bin/env bash
# A local MLflow tracking server on 127.0.0.1, stopped by its PID file.
#
#   infra/local/mlflow-server.sh start   # writes .run/mlflow/{server.pid,server.log,env}
#   source .run/mlflow/env                # MLFLOW_TRACKING_URI (+ credentials with auth on)
#   python sweeps/wgan_clip.py --preset smoke          # logs to the server
#   infra/local/mlflow-server.sh stop    # SIGTERM to the server's process group
#   infra/local/mlflow-server.sh status
#
# Settings (environment):
#   GANLIB_RUN_DIR                 state folder (default <repo>/.run)
#   MLFLOW_PORT                    default 5000
#   MLFLOW_WORKERS                 uvicorn workers, default 1 (MLflow's own default is 4, ~3.6 GB)
#   MLFLOW_BACKEND_STORE_URI       default sqlite:///<repo>/mlflow.db (the sweeps' default store)
#   MLFLOW_ARTIFACTS_DESTINATION   default <repo>/mlartifacts (artifacts are proxied: mlflow-artifacts:/)
#   GANLIB_MLFLOW_AUTH=1           MLflow basic auth (`--app-name basic-auth`, needs Flask-WTF,
#                                  i.e. mlflow[auth]): an admin password and a CSRF secret are
#                                  generated into .run/mlflow/ (mode 600) unless
#                                  MLFLOW_AUTH_ADMIN_PASSWORD / MLFLOW_FLASK_SERVER_SECRET_KEY are set;
#                                  .run/mlflow/env then exports MLFLOW_TRACKING_USERNAME/PASSWORD.
# The server listens on 127.0.0.1 only (not configurable); see docs/cluster.md for tunnels.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STATE="$RUN_DIR/mlflow"
PIDFILE="$STATE/server.pid"
LOG="$STATE/server.log"
ENVFILE="$STATE/env"
PORT="${MLFLOW_PORT:-5000}"
WORKERS="${MLFLOW_WORKERS:-1}"
BACKEND="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$REPO_DIR/mlflow.db}"
ARTIFACTS="${MLFLOW_ARTIFACTS_DESTINATION:-$REPO_DIR/mlartifacts}"

# secret FILE : the content of FILE, created with a random value (mode 600) when missing
secret() {
  if [[ ! -s "$1" ]]; then
    (umask 077 && "$GANLIB_PYTHON" -c 'import secrets; print(secrets.token_urlsafe(24), end="")' >"$1")
  fi
  chmod 600 "$1"
  cat "$1"
}

start() {
  if pid="$(pid_alive "$PIDFILE")"; then die "an MLflow server started here is already running (PID $pid); stop it first"; fi
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  local args=(server --backend-store-uri "$BACKEND" --artifacts-destination "$ARTIFACTS"
              --host "$BIND_HOST" --port "$PORT" --workers "$WORKERS")
  : >"$ENVFILE"
  chmod 600 "$ENVFILE"
  if [[ "${GANLIB_MLFLOW_AUTH:-0}" == 1 ]]; then
    "$GANLIB_PYTHON" -c 'import flask_wtf' 2>/dev/null \
      || die "GANLIB_MLFLOW_AUTH=1 needs MLflow's auth extra (pip install 'mlflow[auth]', i.e. Flask-WTF)"
    export MLFLOW_AUTH_ADMIN_USERNAME="${MLFLOW_AUTH_ADMIN_USERNAME:-admin}"
    export MLFLOW_AUTH_ADMIN_PASSWORD="${MLFLOW_AUTH_ADMIN_PASSWORD:-$(secret "$STATE/admin_password")}"
    export MLFLOW_FLASK_SERVER_SECRET_KEY="${MLFLOW_FLASK_SERVER_SECRET_KEY:-$(secret "$STATE/flask_secret_key")}"
    # The users database of the auth app, beside the other local state.
    export MLFLOW_AUTH_CONFIG_PATH="$STATE/basic_auth.ini"
    cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = sqlite:///$STATE/basic_auth.db
admin_username = $MLFLOW_AUTH_ADMIN_USERNAME
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
INI
    args+=(--app-name basic-auth)
    cat >>"$ENVFILE" <<ENV
export MLFLOW_TRACKING_USERNAME=$MLFLOW_AUTH_ADMIN_USERNAME
export MLFLOW_TRACKING_PASSWORD=$MLFLOW_AUTH_ADMIN_PASSWORD
ENV
  fi
  start_detached "$PIDFILE" "$LOG" "$BIN_DIR/mlflow" "${args[@]}"
  wait_http "http://$BIND_HOST:$PORT/health" "$PIDFILE" "$LOG" "${MLFLOW_START_TIMEOUT:-120}"
  echo "export MLFLOW_TRACKING_URI=http://$BIND_HOST:$PORT" >>"$ENVFILE"
  echo "MLflow server up (PID $(cut -d" " -f1 "$PIDFILE")): http://$BIND_HOST:$PORT"
  echo "Clients: source $ENVFILE"
}

main "MLflow server" "$PIDFILE" "$ENVFILE" "${MLFLOW_STOP_TIMEOUT:-30}" "${1:-}"
