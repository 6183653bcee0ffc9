#!/bin/sh
# Celery beat with sslm's scheduler: sslm-beat, kept for existing callers; see docs/workers.md.
exec sslm-beat "$@"
