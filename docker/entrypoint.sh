#!/bin/sh
# Entry point of the sslm image.
#
# Started as root (docker-compose.yml's store-init service), it makes each folder named in
# SSLM_WRITABLE_DIRS (colon-separated) exist and belong to SSLM_UID:SSLM_GID (10001:10001),
# then runs its command as that user. Started as anyone else (every other service runs as
# uid 10001), it only runs its command.
#
# Why: Docker creates a bind-mounted folder that does not exist yet as root, and a store that
# root once wrote to (an `sslm-mgr` run by `docker compose exec -u root`) keeps root's files;
# the workers, as uid 10001, could write to neither.
set -euf
uid="${SSLM_UID:-10001}"
gid="${SSLM_GID:-$uid}"

if [ "$(id -u)" != 0 ]; then
    exec "$@"
fi

old_ifs=$IFS
IFS=:
for dir in ${SSLM_WRITABLE_DIRS:-}; do
    [ -n "$dir" ] || continue
    mkdir -p -- "$dir"
    # Only what is not the user's yet, so a large store costs one walk and no writes. find
    # does not follow links (-P) and chown -h changes a link (curr, next) itself, never what
    # it points to.
    find "$dir" ! \( -uid "$uid" -gid "$gid" \) -exec chown -h "$uid:$gid" {} +
done
IFS=$old_ifs
# setpriv (util-linux, in every Debian image) drops root for good: no supplementary groups,
# and the kernel clears every capability when the uid stops being 0.
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
