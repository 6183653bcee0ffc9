#!/bin/sh
# Celery beat: sends the periodic checks (renew, roll, clean). Run exactly one per broker,
# or every check is sent twice. docker-compose's beat service runs exactly this.
# The schedule file records when each entry last ran; it must be on a writable volume.
set -eu
: "${SSLM_BROKER_URL:?must name the broker, e.g. redis://:PASSWORD@127.0.0.1:6379/0}"
exec celery -A sslm_tasks beat \
    --schedule "${SSLM_BEAT_SCHEDULE:-/var/lib/sslm/beat/celerybeat-schedule}" \
    --loglevel "${SSLM_LOG_LEVEL:-INFO}" \
    "$@"
