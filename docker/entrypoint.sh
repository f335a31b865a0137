#!/bin/sh
# Container start. On a fresh volume, put the knowledge base that `docker build` ingested
# from the starter knowledge in place, so the first `docker run` answers within seconds
# instead of ingesting first. Then run the command (by default `rodeoai serve`).
#
# The seed is used only when it is exactly what the app's own first run would load:
#   - SQLite (no RODEOAI_DATABASE_URL; a PostgreSQL database loads the knowledge itself),
#   - no database in the data folder yet (an existing one is never touched),
#   - RODEOAI_AUTOLOAD_KNOWLEDGE not switched off,
#   - the knowledge folder holds the same files the seed was built from (one mounted over
#     /app/knowledge, or another RODEOAI_KNOWLEDGE_DIR, is loaded by the app as usual).
set -eu

DATA="${RODEOAI_DATA_DIR:-/data}"
KNOWLEDGE="${RODEOAI_KNOWLEDGE_DIR:-/app/knowledge}"
SEED="${SEED_DIR:-/opt/rodeoai/seed}"

# The same fingerprint the Dockerfile records next to the seed: every file, by relative path.
fingerprint() {
    (cd "$1" && find . -type f -exec sha256sum {} + | LC_ALL=C sort -k 2 | sha256sum | cut -d' ' -f1)
}
if [ "${1:-}" = --fingerprint ]; then  # at build time, from the Dockerfile
    fingerprint "$2"
    exit 0
fi

autoload=$(printf '%s' "${RODEOAI_AUTOLOAD_KNOWLEDGE:-true}" | tr '[:upper:]' '[:lower:]')
case "$autoload" in
    0 | off | f | false | n | no) autoload=no ;;
    *) autoload=yes ;;
esac

if [ -z "${RODEOAI_DATABASE_URL:-}" ] && [ "$autoload" = yes ] \
    && [ -f "$SEED/rodeoai.db" ] && [ ! -e "$DATA/rodeoai.db" ] && [ -d "$KNOWLEDGE" ] \
    && [ "$(fingerprint "$KNOWLEDGE")" = "$(cat "$SEED.knowledge.sha256" 2>/dev/null)" ]; then
    if ! mkdir -p "$DATA" 2>/dev/null || [ ! -w "$DATA" ]; then
        echo "rodeoai: $DATA is not writable by uid $(id -u); for a bind mount, run" \
            "'chown -R $(id -u):$(id -g)' on the host folder" >&2
        exit 1
    fi
    # Copy beside, then rename into place, the database last: its presence marks a finished
    # seed, so a container killed half-way seeds again at its next start.
    tmp="$DATA/.seed.tmp"
    rm -rf "$tmp"
    cp -R "$SEED" "$tmp"
    # Leftovers of a deleted database: an old index is only a cache of it, and an old
    # write-ahead log would be replayed into the new file.
    rm -rf "$DATA/index" "$DATA/rodeoai.db-wal" "$DATA/rodeoai.db-shm" "$DATA/rodeoai.db-journal"
    mv "$tmp/index" "$DATA/index"
    sync
    mv "$tmp/rodeoai.db" "$DATA/rodeoai.db"
    sync
    rm -rf "$tmp"
    echo "rodeoai: first start: the starter knowledge, ingested at build time, is in $DATA" >&2
fi

exec "$@"
