#!/bin/sh
# Flower behind basic auth: sslm-flower, kept for existing callers; see docs/workers.md.
exec sslm-flower "$@"
