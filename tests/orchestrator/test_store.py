"""The SQLite store on a real file: migrations, transactions, history, snapshots,
and a writer SIGKILLed mid-stream never leaves half a policy."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.settings import ContainerPolicy
from orchestrator.store import HISTORY_KEEP, MIGRATIONS, Store
from tests.conftest import ROOT, wait_until


def policy(**values: object) -> ContainerPolicy:
    return ContainerPolicy.model_validate(values)


def test_a_new_file_is_migrated_to_the_latest_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "tandem.db")
    assert store.version == len(MIGRATIONS)
    tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"policies", "history", "snapshots"} <= tables
    store.close()
    again = Store(tmp_path / "state" / "tandem.db")  # opening again migrates nothing
    assert again.version == len(MIGRATIONS)
    again.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tandem.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer than this tandem knows"):
        Store(path)


def test_policies_round_trip_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "tandem.db"
    store = Store(path)
    web = policy(enable=True, dest="/srv/{container}", exclude=[r"\.tmp$"], **{"split-brain": "manual"})
    store.set_policy("web", web)
    store.set_policy("db", policy(delay=2))
    store.set_policy("db", policy(delay=3))  # replaces, not merges
    store.close()
    store = Store(path)
    assert store.policies() == {"web": web, "db": policy(delay=3)}
    assert store.delete_policy("db") is True
    assert store.delete_policy("db") is False
    assert store.policies() == {"web": web}
    events = [(r.event, r.detail) for r in store.history("db")]
    assert events[0] == ("policy", "reset to labels and config")
    assert [e for e, _ in events] == ["policy", "policy", "policy"]
    store.close()


def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "tandem.db")
    store.set_policy("web", policy(delay=1))
    with pytest.raises(sqlite3.IntegrityError), store._tx() as db:
        db.execute("UPDATE policies SET policy = '{\"delay\": 9}' WHERE container = 'web'")
        db.execute("INSERT INTO policies (container, policy, updated) VALUES ('web', '{}', 0)")
    assert store.policies() == {"web": policy(delay=1)}
    store.close()


def test_history_is_newest_first_and_trimmed(tmp_path: Path) -> None:
    store = Store(tmp_path / "tandem.db")
    for i in range(HISTORY_KEEP + 20):
        store.record("web", "exit", i, f"run {i}")
    store.record("db", "start")
    rows = store.history("web", limit=HISTORY_KEEP + 100)
    assert len(rows) == HISTORY_KEEP
    assert rows[0].code == HISTORY_KEEP + 19 and rows[-1].code == 20
    assert [r.event for r in store.history("db")] == ["start"]
    store.close()


def test_snapshot_metadata_is_kept_per_mount(tmp_path: Path) -> None:
    store = Store(tmp_path / "tandem.db")
    assert store.snapshot("web", "web/data") is None
    store.set_snapshot("web", "web/data", {"files": 3, "synced": 1.5})
    store.set_snapshot("web", "web/data", {"files": 4, "synced": 2.5})
    store.set_snapshot("web", "web/etc", {"files": 1, "synced": 2.0})
    assert store.snapshot("web", "web/data") == {"files": 4, "synced": 2.5}
    assert store.snapshot("web", "web/etc") == {"files": 1, "synced": 2.0}
    store.close()


WRITER = textwrap.dedent(
    """
    import sys
    from orchestrator.settings import ContainerPolicy
    from orchestrator.store import Store

    store = Store(__import__("pathlib").Path(sys.argv[1]))
    i = 0
    while True:
        exclude = [f"x{i}-{j}" for j in range(50)]  # big rows: a kill lands mid-write
        store.set_policy(f"c{i % 7}", ContainerPolicy(delay=i % 100, exclude=tuple(exclude)))
        if i == 20:
            print("writing", flush=True)
        i += 1
    """
)


def test_a_writer_killed_mid_stream_leaves_whole_policies(tmp_path: Path) -> None:
    path = tmp_path / "tandem.db"
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            wait_until(lambda p=proc: p.stdout.readline().startswith("writing"), 30, "writer running")
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(10)
            assert proc.stdout is not None
            proc.stdout.close()
        store = Store(path)
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        found = store.policies()  # every row parses into a whole policy
        assert found and all(len(p.exclude or ()) == 50 for p in found.values())
        for name, value in found.items():  # one write's values, never two mixed
            runs = {e.partition("-")[0][1:] for e in value.exclude or ()}
            assert len(runs) == 1, (name, runs)
            (run,) = runs
            assert int(run) % 7 == int(name[1:]) and int(run) % 100 == value.delay
        store.close()
