#!/bin/sh
# Flower, the web monitor of the workers and their tasks, behind HTTP basic auth.
# docker-compose's flower service runs exactly this. FLOWER_BASIC_AUTH is user:password
# (several comma-separated); there is deliberately no way to run it without.
set -eu
: "${SSLM_BROKER_URL:?must name the broker, e.g. redis://:PASSWORD@127.0.0.1:6379/0}"
: "${FLOWER_BASIC_AUTH:?must be user:password; Flower shows task arguments and controls workers}"
exec celery -A sslm_tasks flower \
    --address="${FLOWER_ADDRESS:-0.0.0.0}" \
    --port="${FLOWER_PORT:-5555}" \
    --basic-auth="${FLOWER_BASIC_AUTH}" \
    "$@"
