#!/bin/sh
# The deploy worker of one site: copies certificates to that site's servers and restarts
# them (queue "deploy.<site>", site from SSLM_SITE). Run several, on hosts that can reach the
# site's servers, to scale a site (`docker-compose up --scale worker-deploy=N`).
# docker-compose's worker-deploy service runs exactly this; the tests run it as a local
# process. Further arguments go to `celery worker` and win over the ones here.
set -eu
: "${SSLM_BROKER_URL:?must name the broker, e.g. redis://:PASSWORD@127.0.0.1:6379/0}"
site="${SSLM_SITE:-default}"
exec celery -A sslm_tasks worker \
    --queues "deploy.${site}" \
    --hostname "deploy-${site}@%h" \
    --pool prefork \
    --concurrency "${SSLM_DEPLOY_CONCURRENCY:-2}" \
    --loglevel "${SSLM_LOG_LEVEL:-INFO}" \
    "$@"
