"""capture/scrub.py: which values go, which structure stays."""
import pytest

from capture import scrub


@pytest.fixture(autouse=True)
def default_rule():
    yield
    scrub.configure(scrub.ScrubConfig())


@pytest.mark.parametrize("text,want", [
    ("ALTER USER app WITH PASSWORD 'hunter2'", "ALTER USER app WITH PASSWORD '?'"),
    ("CREATE ROLE r LOGIN ENCRYPTED PASSWORD 'a''b' VALID UNTIL 'x'", "CREATE ROLE r LOGIN ENCRYPTED PASSWORD '?' VALID UNTIL 'x'"),
    ("CREATE USER 'u'@'%' IDENTIFIED BY 'hunter2'", "CREATE USER 'u'@'%' IDENTIFIED BY '?'"),
    ("ALTER USER u IDENTIFIED WITH mysql_native_password BY 'hunter2'",
     "ALTER USER u IDENTIFIED WITH mysql_native_password BY '?'"),
    ("SET PASSWORD FOR 'u'@'h' = 'hunter2'", "SET PASSWORD FOR 'u'@'h' = '?'"),
    ("SET PASSWORD = PASSWORD('hunter2')", "SET PASSWORD = PASSWORD('?')"),
    ("CREATE ROLE bob WITH PASSWORD = 'hunter2' AND LOGIN = true", "CREATE ROLE bob WITH PASSWORD = '?' AND LOGIN = true"),
    ("ALTER ROLE x PASSWORD $$hunter2$$", "ALTER ROLE x PASSWORD '?'"),
    ("SELECT password FROM users WHERE id = 'x'", "SELECT password FROM users WHERE id = 'x'"),
    ("ALTER USER app WITH PASSWORD 'cut-by-the-capt", "ALTER USER app WITH PASSWORD '?'"),
])
def test_sql_password_literals(text, want):
    assert scrub.sql(text) == want


@pytest.mark.parametrize("text,want", [
    ("SET session:1 {\"card\": \"4111\"} EX 60", "SET session:1 ?"),
    ("GET session:1", "GET session:1"),
    ("HSET user:1 email a@b.c", "HSET user:1 email ?"),
    ("MSET a 1 b 2", "MSET ?"),
    ("ACL SETUSER alice on >hunter2 ~* +@all", "ACL SETUSER alice ?"),
    ("CONFIG SET requirepass hunter2", "CONFIG SET requirepass ?"),
    ("SENTINEL SET mymaster auth-pass hunter2", "SENTINEL SET mymaster ?"),
    ("PUBLISH orders {\"id\":1}", "PUBLISH orders ?"),
    ("DEL a b", "DEL a b"),
])
def test_redis_values(text, want):
    assert scrub.redis(text) == want


def test_urls_and_queries():
    assert scrub.url("http://bob:hunter2@api.local/x?y") == "http://REDACTED:REDACTED@api.local/x?y"
    assert scrub.url("/plain/path") == "/plain/path"
    assert scrub.query("page=2&access_token=abc&X-Amz-Signature=f00&api_key=k&q=z") == \
        "page=2&access_token=REDACTED&X-Amz-Signature=REDACTED&api_key=REDACTED&q=z"
    assert scrub.query("password=x", keys=["nothing"]) == "password=x"


def test_record_step_and_configuration():
    attrs = {"db.system": "mysql", "db.query.text": "CREATE USER u IDENTIFIED BY 'pw1'"}
    msg = scrub.record(attrs, "Duplicate entry 'alice@example.com' for key 'users.email'")
    assert attrs["db.query.text"] == "CREATE USER u IDENTIFIED BY '?'"
    assert msg == "Duplicate entry '?' for key 'users.email'"
    attrs = {"url.path": "/a", "url.query": "mytoken=1"}
    scrub.record(attrs, "")
    assert attrs["url.query"] == "mytoken=REDACTED"
    scrub.configure(scrub.ScrubConfig(enabled=False))
    attrs = {"url.query": "token=1"}
    scrub.record(attrs, "")
    assert attrs["url.query"] == "token=1"
    scrub.configure(scrub.ScrubConfig(credential_keys=["mytoken"]))
    attrs = {"url.query": "token=1&mytoken=2"}
    scrub.record(attrs, "")
    assert attrs["url.query"] == "token=1&mytoken=REDACTED"


@pytest.mark.parametrize("argv, shown", [
    (["redis-cli", "-p", "6379", "-a", "pw1", "--no-auth-warning", "GET", "k"],
     ["redis-cli", "-p", "6379", "-a", "REDACTED", "--no-auth-warning", "GET", "k"]),
    (["/usr/bin/mysql", "-uroot", "-ppw1", "-p"], ["/usr/bin/mysql", "-uroot", "-pREDACTED", "-p"]),
    (["redis-server", "--port", "7000", "--requirepass", "pw1"],
     ["redis-server", "--port", "7000", "--requirepass", "REDACTED"]),
    (["app", "--db-password=pw1", "--token", "pw1", "--verbose"],
     ["app", "--db-password=REDACTED", "--token", "REDACTED", "--verbose"]),
    (["psql", "host=db user=u password=pw1 dbname=x"], ["psql", "host=db user=u password=REDACTED dbname=x"]),
    (["env", "PGPASSWORD=pw1", "pg_dump"], ["env", "PGPASSWORD=REDACTED", "pg_dump"]),
    (["worker", "--broker", "amqp://guest:pw1@mq:5672/"], ["worker", "--broker", "amqp://REDACTED:REDACTED@mq:5672/"]),
    (["python3", "-", "55239", "30"], ["python3", "-", "55239", "30"]),
    (["ls", "-a", "/tmp"], ["ls", "-a", "/tmp"]),
])
def test_command_line_credentials_are_redacted(argv, shown):
    assert scrub.command_line(argv) == shown


def test_process_command_line_is_scrubbed_but_names_still_come_from_argv(tmp_path):
    from capture.enrich.proc import read_proc
    d = tmp_path / "42"
    d.mkdir()
    (d / "cmdline").write_bytes(b"redis-cli\0-a\0s3cr3t\0GET\0k\0")
    (d / "comm").write_bytes(b"redis-cli\n")
    info = read_proc(42, proc_root=str(tmp_path))
    assert "s3cr3t" not in info.command_line and info.command_line.startswith("redis-cli -a REDACTED")
    assert info.argv[2] == "s3cr3t"  # naming reads argv; spans only carry command_line
