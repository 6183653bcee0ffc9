#!/bin/sh
# The issue worker: keys, CSRs, ACME orders, the store, rolls and cleaning (queue "issue"),
# plus the zone and nameserver work the issue chain waits on (queue "dns").
# docker-compose's worker-issue service runs exactly this; the tests run it as a local
# process. Further arguments go to `celery worker` and win over the ones here.
set -eu
: "${SSLM_BROKER_URL:?must name the broker, e.g. redis://:PASSWORD@127.0.0.1:6379/0}"
exec celery -A sslm_tasks worker \
    --queues issue,dns \
    --hostname "issue@%h" \
    --pool prefork \
    --concurrency "${SSLM_ISSUE_CONCURRENCY:-2}" \
    --loglevel "${SSLM_LOG_LEVEL:-INFO}" \
    "$@"
