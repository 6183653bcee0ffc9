#!/usr/bin/env bash
# Set up everything the tests need, then run lint, type checks and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# named, sshd, rndc and ip live in sbin; a non-login shell may not have it on PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
scripts/setup.sh --dev
.venv/bin/ruff check sslm_tasks tests bench
.venv/bin/mypy
.venv/bin/pytest -q -p no:cacheprovider "$@"
