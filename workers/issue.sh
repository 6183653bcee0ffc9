#!/bin/sh
# The issue worker (queues issue and dns): sslm-worker, kept for existing callers; see docs/workers.md.
exec sslm-worker "$@"
