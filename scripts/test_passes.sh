#!/usr/bin/env sh
# The suite's two passes, SQLite and a real PostgreSQL (pgserver), side by side. Each pass
# spends much of its time starting processes and waiting on them, so two together keep both
# cores busy; run serially they took 34 minutes of CI on 2 cores. Each pass writes its own
# log, printed whole when both are done, so the reports never interleave.
# Usage: scripts/test_passes.sh PYTEST [pytest arguments...]
set -u
PYTEST="$1"
shift
LOGS="${RODEOAI_TEST_LOGS:-.test-logs}"
# The browser tests move to the PostgreSQL pass, which has less to do (tests/conftest.py).
export RODEOAI_TEST_BALANCE=1
mkdir -p "$LOGS"
"$PYTEST" "$@" >"$LOGS/sqlite.log" 2>&1 &
SQLITE=$!
"$PYTEST" --database postgresql -p no:cacheprovider "$@" >"$LOGS/postgresql.log" 2>&1 &
POSTGRES=$!
wait "$SQLITE"
SQLITE_RC=$?
wait "$POSTGRES"
POSTGRES_RC=$?
for pass in sqlite postgresql; do
    echo "==================== $pass pass ===================="
    cat "$LOGS/$pass.log"
done
echo "SQLite pass exit $SQLITE_RC, PostgreSQL pass exit $POSTGRES_RC"
[ "$SQLITE_RC" -eq 0 ] && [ "$POSTGRES_RC" -eq 0 ]
