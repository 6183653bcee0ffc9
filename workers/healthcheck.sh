#!/bin/sh
# Health check of the worker in this container: does it answer a ping over the broker?
# Usage: healthcheck.sh NODE [celery inspect options]  -- NODE is the part of the worker's
# --hostname before "@" (issue, deploy-<site>); the part after it is this host's name, as
# Celery's %h expands it.
set -eu
node="$1"
shift
host="$(python -c 'import socket; print(socket.gethostname())')"
exec celery -A sslm_tasks inspect ping --destination "${node}@${host}" --timeout 10 "$@"
