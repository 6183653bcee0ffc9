# One image for every sslm service: the workers, beat and Flower differ only in the launch
# script they run (workers/*.sh, beat/beat.sh), as docker-compose.yml shows.
FROM python:3.11-slim

# openssh-client + rsync: deploying to remote servers; openssl: checks an operator runs by hand.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client rsync openssl \
 && rm -rf /var/lib/apt/lists/*

# A fixed uid, so the operator can chown the bind-mounted certs/ and prod-certs/ to it.
RUN groupadd --system --gid 10001 sslm \
 && useradd --system --uid 10001 --gid sslm --create-home --home-dir /home/sslm sslm

WORKDIR /app
COPY pyproject.toml ./
COPY sslm_tasks ./sslm_tasks
RUN pip install --no-cache-dir '.[monitor]'
COPY workers ./workers
COPY beat ./beat

# ssl-mgr's top directory (conf.d, certs, prod-certs are mounted here) and beat's schedule;
# created owned by sslm so that named volumes mounted on them start out writable.
RUN install -d -o sslm -g sslm -m 0750 \
        /srv/ssl-mgr /srv/ssl-mgr/certs /srv/ssl-mgr/prod-certs /var/lib/sslm/beat

USER sslm
ENV SSL_MGR_TOPDIR=/srv/ssl-mgr \
    PYTHONUNBUFFERED=1

CMD ["sh", "workers/issue.sh"]
