#!/bin/sh
# The deploy worker of site $SSLM_SITE (queue deploy.<site>): sslm-worker --site, kept for existing callers.
exec sslm-worker --site "${SSLM_SITE:-default}" "$@"
