"""Live eBPF capture of MongoDB: pymongo against SecantusDB (a MongoDB wire-protocol server from PyPI;
no real mongod is installable here)."""
from __future__ import annotations

import time

import pytest

from support.live import live_capture
from support.servers import mongo_instance

pytestmark = pytest.mark.ebpf
DB, COLL = "guardian_shop", "users"


@pytest.fixture(scope="module")
def mongo_capture():
    import pymongo
    from pymongo.errors import DuplicateKeyError, OperationFailure

    with mongo_instance() as server:  # MissingServer says what to install
        port = server["port"]
        with live_capture(port=port, extra=("--no-tls",)) as cap:
            client = pymongo.MongoClient("127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=20000)
            users = client[DB][COLL]
            users.insert_one({"_id": 1, "name": "ada"})
            assert users.find_one({"_id": 1})["name"] == "ada"
            users.update_one({"_id": 1}, {"$set": {"name": "grace"}})
            assert users.count_documents({}) == 1
            with pytest.raises(DuplicateKeyError):
                users.insert_one({"_id": 1, "name": "dup"})
            with pytest.raises(OperationFailure):
                client[DB].command("guardianNoSuchCommand")
            users.delete_one({"_id": 1})
            client.close()
            time.sleep(0.5)
    return cap


def ops(cap, kind):
    return [s for s in cap.spans if s["kind"] == kind and s["attributes"].get("db.namespace") == DB]


def test_every_operation_is_one_client_span(mongo_capture):
    got = sorted((s["name"], s["status_code"]) for s in ops(mongo_capture, "CLIENT"))
    assert got == sorted([("insert users", "UNSET"), ("find users", "UNSET"), ("update users", "UNSET"),
                          ("aggregate users", "UNSET"), ("insert users", "ERROR"), ("delete users", "UNSET"),
                          ("guardianNoSuchCommand", "ERROR")]), mongo_capture.stats
    for s in ops(mongo_capture, "CLIENT"):
        a = s["attributes"]
        assert a["db.system"] == "mongodb" and a["network.transport"] == "tcp" and a["server.port"] > 0
        assert 0 < s["end_time_unix_nano"] - s["start_time_unix_nano"] < 10e9


def test_errors_carry_the_server_code(mongo_capture):
    errors = {s["name"]: s for s in ops(mongo_capture, "CLIENT") if s["status_code"] == "ERROR"}
    assert errors["insert users"]["attributes"]["db.response.status_code"] == "11000"
    assert errors["guardianNoSuchCommand"]["attributes"]["db.response.status_code"] == "59"


def test_server_side_sees_the_same_operations(mongo_capture):
    client = sorted(s["name"] for s in ops(mongo_capture, "CLIENT"))
    server = sorted(s["name"] for s in ops(mongo_capture, "SERVER"))
    assert server == client
