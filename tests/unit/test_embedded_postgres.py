"""EmbeddedPostgres start-up: a new cluster whose initdb died of a signal is made again;
a folder that held anything is never wiped."""

import subprocess
from types import SimpleNamespace

import pgserver
import pytest

from orchestrator.db.engine import DatabaseError, EmbeddedPostgres


def crashing_once(calls: list):
    def get_server(pgdata, cleanup_mode):
        calls.append(sorted(p.name for p in pgdata.iterdir()))
        if len(calls) == 1:
            (pgdata / "PG_VERSION").write_text("16")  # half a cluster
            raise subprocess.CalledProcessError(-11, ["initdb"])
        return SimpleNamespace(get_uri=lambda: "postgresql://x")

    return get_server


def test_a_new_cluster_whose_initdb_crashed_is_made_again(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(pgserver, "get_server", crashing_once(calls))
    pg = EmbeddedPostgres(tmp_path / "pgdata")
    assert pg.start() == "postgresql://x"
    assert calls == [[], []]  # the second initdb saw an empty folder again


def test_existing_data_is_never_wiped(tmp_path, monkeypatch):
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "keep.me").write_text("data")
    calls: list = []
    monkeypatch.setattr(pgserver, "get_server", crashing_once(calls))
    with pytest.raises(DatabaseError, match="failed to start"):
        EmbeddedPostgres(pgdata).start()
    assert (pgdata / "keep.me").read_text() == "data" and len(calls) == 1
