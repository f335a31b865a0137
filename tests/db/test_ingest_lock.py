"""One ingestion at a time, across processes, on both engines: a second ingestion waits for
the first, and a process killed while it ingests leaves no lock behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from server.db import ingest_lock, ingest_running, make_engine
from tests import databases

HOLD = """
import sys, time
from server.db import ingest_lock, make_engine
engine = make_engine(sys.argv[1], upgrade=False)
with ingest_lock(engine):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_ingestion_waits_and_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    url = databases.database_url(tmp_path) or f"sqlite:///{tmp_path / 'rodeoai.db'}"
    engine = make_engine(url)
    assert not ingest_running(engine)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert ingest_running(engine)
        acquired = threading.Event()

        def second_ingestion() -> None:
            with ingest_lock(engine):
                acquired.set()

        waiter = threading.Thread(target=second_ingestion, daemon=True)
        waiter.start()
        assert not acquired.wait(1.0)  # still held by the other process
        holder.send_signal(signal.SIGKILL)  # dies mid-ingestion: no cleanup code runs
        assert acquired.wait(60)
        waiter.join(10)
        assert not ingest_running(engine)
    finally:
        holder.kill()
        holder.wait()
        engine.dispose()
