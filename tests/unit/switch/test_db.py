"""mod_db semantics on sqlite: the API's exact strings, the app, persistence across a restart."""
import pytest

from firmware.switch import Db


@pytest.fixture
def db():
    d = Db(":memory:")
    yield d
    d.close()


@pytest.mark.parametrize("commands", [[
    ("select/spymap/1001", ""),
    ("exists/spymap/1001", "false"),
    ("insert/spymap/1001/uuid-a", "+OK"),
    ("select/spymap/1001", "uuid-a"),
    ("exists/spymap/1001", "true"),
    ("insert/spymap/1001/uuid-b", "+OK"),           # an upsert
    ("select/spymap/1001", "uuid-b"),
    ("insert/spymap/1002/uuid-c", "+OK"),
    ("insert/last_dial/1001/881002", "+OK"),
    ("count", "2"),                                 # distinct realms
    ("count/spymap", "2"),
    ("list", "spymap,last_dial"),
    ("list/spymap", "1001,1002"),
    ("delete/spymap/1001", "+OK"),
    ("select/spymap/1001", ""),
    ("list/spymap", "1002"),
    ("insert/url/k/sip:a@b/c", "+OK"),              # the value keeps its slashes
    ("select/url/k", "sip:a@b/c"),
    ("SELECT/url/k", "sip:a@b/c"),                  # the operation is case-insensitive
]])
def test_api_strings_as_freeswitch_answers_them(db, commands):
    for cmd, want in commands:
        assert db.api(cmd) == want, cmd


@pytest.mark.parametrize("bad", ["", "bogus/a/b", "insert/a/b", "select/a", "delete/a", "exists/a",
                                 "count/a/b", "list/a/b"])
def test_api_syntax_errors(db, bad):
    assert db.api(bad) == "!err!"


def test_app_insert_and_delete(db):
    db.app("insert/spymap/1001/some-uuid")
    assert db.select("spymap", "1001") == "some-uuid"
    db.app("delete/spymap/1001")
    assert db.select("spymap", "1001") is None


@pytest.mark.parametrize("bad", ["select/spymap/1001", "insert/spymap/1001", "delete/spymap", ""])
def test_app_accepts_only_insert_and_delete(db, bad):
    with pytest.raises(ValueError, match="usage: db"):
        db.app(bad)


def test_rows_survive_a_restart(tmp_path):
    path = tmp_path / "state" / "db.sqlite"
    first = Db(path)
    first.app("insert/spymap/1001/uuid-1")
    first.close()
    second = Db(path)
    try:
        assert second.api("select/spymap/1001") == "uuid-1"
        assert second.count("spymap") == 1
    finally:
        second.close()
