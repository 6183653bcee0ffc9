# One image for every sslm service: the workers, beat and Flower differ only in the console
# script they run (sslm-worker [--site NAME], sslm-beat, sslm-flower), as docker-compose.yml
# shows. The build context is filtered by .dockerignore: no store, no secrets.
FROM python:3.11-slim

# openssh-client + rsync: deploying to remote servers; openssl: checks an operator runs by hand.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client rsync openssl \
 && rm -rf /var/lib/apt/lists/*

# A fixed uid, so that volumes, bind mounts and secret files can be given to it.
RUN groupadd --system --gid 10001 sslm \
 && useradd --system --uid 10001 --gid sslm --create-home --home-dir /home/sslm sslm

# The package as a wheel install (not editable), exactly what tests/e2e/test_package.py builds
# from these same files.
COPY pyproject.toml README.md LICENSE /tmp/sslm-src/
COPY sslm_tasks /tmp/sslm-src/sslm_tasks
RUN pip install --no-cache-dir '/tmp/sslm-src[monitor]' && rm -rf /tmp/sslm-src
COPY docker/entrypoint.sh /usr/local/bin/sslm-entrypoint

# ssl-mgr's top directory (conf.d, certs, prod-certs are mounted here) and beat's state,
# owned by sslm so that new named volumes mounted on them start out writable; the store-init
# service makes sure of it for bind mounts and old volumes too.
RUN install -d -o sslm -g sslm -m 0750 \
        /srv/ssl-mgr/certs /srv/ssl-mgr/prod-certs /var/lib/sslm/beat

ENV SSL_MGR_TOPDIR=/srv/ssl-mgr \
    SSLM_BEAT_SCHEDULE=/var/lib/sslm/beat/celerybeat-schedule \
    SSLM_WRITABLE_DIRS=/srv/ssl-mgr/certs:/srv/ssl-mgr/prod-certs:/var/lib/sslm/beat \
    HOME=/home/sslm \
    PYTHONUNBUFFERED=1
WORKDIR /srv/ssl-mgr
USER sslm
ENTRYPOINT ["sslm-entrypoint"]
CMD ["sslm-worker"]
