#!/usr/bin/env bash
# The main job on the example configuration: renew and roll every service of conf.d in-process
# (no broker, no network), then show the status. Output lands in ./certs and ./prod-certs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export SSL_MGR_TOPDIR="$PWD"
unset SSLM_BROKER_URL
.venv/bin/sslm-mgr -renew -roll
.venv/bin/sslm-mgr -s
