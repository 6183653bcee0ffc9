#!/bin/sh
# Health check of beat. Beat answers no pings, and its container ends when beat does; what
# can fail while it runs is the broker it sends to, so check that one, within 5 seconds.
set -eu
exec python -c 'import os; from sslm_tasks.broker import check_broker; check_broker(os.environ["SSLM_BROKER_URL"], timeout_s=5)'
