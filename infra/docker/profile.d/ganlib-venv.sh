# /etc/profile.d/ganlib-venv.sh (copied by infra/docker/Dockerfile): the project's virtual
# environment first on PATH in login shells too.
#
# Ray's cluster launcher runs every command in the container as `bash --login -c -i '...'`
# (and KubeRay does the same with ENABLE_LOGIN_SHELL=true). Debian's /etc/profile sets PATH
# from scratch, which drops the /opt/venv/bin that the image's ENV put first: `ray` and the
# project's `python` would not be found. /etc/profile then sources this file.
# POSIX sh: /etc/profile is read by sh and dash too.
GANLIB_VENV="${VIRTUAL_ENV:-/opt/venv}"
if [ -x "$GANLIB_VENV/bin/python" ]; then
  case "$PATH" in
    "$GANLIB_VENV/bin:"*) ;;  # already first
    *) PATH="$GANLIB_VENV/bin:$PATH" ;;
  esac
  VIRTUAL_ENV="$GANLIB_VENV"
  export PATH VIRTUAL_ENV
fi
unset GANLIB_VENV
