#!/usr/bin/env bash
# Set up everything the tests need, then run lint, type checks and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# named, sshd, rndc and ip live in sbin; a non-login shell may not have it on PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
scripts/setup.sh --dev
.venv/bin/ruff check sslm_tasks tests bench
.venv/bin/mypy
# Parallel workers (pytest-xdist): most of a test's time is spent waiting for the services it
# started, so more workers than cores pays; each has its own DNS lab addresses (lab_dns.SLOT).
.venv/bin/pytest -q -p no:cacheprovider -n "${SSLM_TEST_WORKERS:-4}" --dist worksteal "$@"
