#!/usr/bin/env bash
# Make the project runnable on a fresh Debian machine: system packages the tests and tools use,
# then a virtualenv in .venv with sslm installed. Idempotent: installs only what is missing.
#   scripts/setup.sh          runtime only (openssl, python venv)
#   scripts/setup.sh --dev    plus what the tests start: redis, sshd, ...
set -euo pipefail
cd "$(dirname "$0")/.."

# sshd, named and rabbitmq-server live in sbin; a non-login shell may not have it on PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

want_dev=false
[ "${1:-}" = "--dev" ] && want_dev=true

# binary -> Debian package
declare -A needed=([openssl]=openssl [rsync]=rsync [ssh]=openssh-client)
if $want_dev; then
  # sshd + ssh: the ssh deploy tests run a real sshd on loopback (rsync is needed anyway)
  # pebble, named, ...: the ACME and DANE tests' lab (tests/integration/lab_*.py) on loopback
  needed+=([redis-server]=redis-server [docker-compose]=docker-compose
           [sshd]=openssh-server [ssh]=openssh-client
           [named-checkzone]=bind9-utils
           [pebble]=pebble [named]=bind9 [rndc]=bind9-utils [dig]=bind9-dnsutils
           [delv]=bind9-dnsutils [ldns-dane]=ldnsutils [ip]=iproute2
           [unbound]=unbound
           # the RabbitMQ tests start a private node (tests/integration/services.py) with
           # an epmd of its own; erlang-base comes with rabbitmq-server, epmd is checked too
           [rabbitmq-server]=rabbitmq-server [epmd]=erlang-base
           [systemd-analyze]=systemd)
fi

missing=()
for binary in "${!needed[@]}"; do
  command -v "$binary" >/dev/null 2>&1 || missing+=("${needed[$binary]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # The tests start their own daemons on loopback: keep apt from starting the system's copies
  # (a system named or unbound takes port 53 on every address, the lab's aliases included;
  # rabbitmq-server and redis-server would run for nothing). policy-rc.d exit 101 = "don't".
  policy=/usr/sbin/policy-rc.d
  made_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=true
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if $made_policy; then
    rm -f "$policy"
    trap - EXIT
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv --help >/dev/null 2>&1; then
    # Debian's own python3 keeps venv in a separate package.
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  "$PYTHON" -m venv .venv
fi
extras=""
$want_dev && extras="[dev,monitor]"
stamp=".venv/.sslm-installed${extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
  touch "$stamp"
fi
# The wheel tests (tests/e2e/conftest.py) install the built wheel into a fresh virtualenv of
# the system's Python without the network: these are the wheels of every runtime dependency,
# as that Python needs them (Debian 12's 3.11.2 needs one more than 3.11.3 and later).
wheels=".venv/wheelhouse"
if $want_dev && { [ ! -f "$wheels/.complete" ] || [ pyproject.toml -nt "$wheels/.complete" ]; }; then
  fetcher=$(mktemp -d)
  /usr/bin/python3 -m venv "$fetcher"
  "$fetcher/bin/pip" download -q --disable-pip-version-check -d "$wheels" .
  rm -rf "$fetcher"
  touch "$wheels/.complete"
fi
# Byte-compile the package (an editable install does not): every sslm process (the CLI, each
# worker, the tests' subprocesses) then starts without compiling it, also where
# PYTHONDONTWRITEBYTECODE keeps Python from caching what it compiles.
.venv/bin/python -m compileall -q sslm_tasks
