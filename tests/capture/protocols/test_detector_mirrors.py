"""The kernel detectors (bpf/protocols/*.h, compiled here with gcc) agree with their userspace
mirrors (used by the pcap source) on real first messages, their prefixes, and random bytes."""
from __future__ import annotations

import ctypes
import random
import shutil
import struct
import subprocess
from pathlib import Path

import bson
import dns.message
import pytest
from pamqp import commands, frame

from capture.protocols import amqp, cassandra, dns as dnsproto, kafka, mongodb
from capture.protocols.base import Side
from tests.capture.protocols.fuzz import OTHER_PROTOCOLS

ROOT = Path(__file__).resolve().parents[3]
PROTOCOLS = {"mongodb": mongodb.detect, "kafka": kafka.detect, "cassandra": cassandra.detect,
             "amqp": amqp.detect, "dns": dnsproto.detect}
MAX_PAYLOAD = 4096
VERDICT = {0: None, 1: Side.CLIENT, 2: Side.SERVER}


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.fail("gcc is missing: run `make setup`")
    d = tmp_path_factory.mktemp("detectors")
    src = d / "detectors.c"
    src.write_text("#include <linux/types.h>\n#define MAX_PAYLOAD %d\n#include \"types.h\"\n" % MAX_PAYLOAD
                   + "".join(f'#include "protocols/{p}.h"\n' for p in PROTOCOLS)
                   + "".join(f"int k_{p}(const __u8 *b, __u32 n) {{ return detect_{p}(b, n); }}\n"
                             for p in PROTOCOLS))
    lib = d / "detectors.so"
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-Wno-unknown-pragmas", "-I", str(ROOT / "bpf"),
                    "-o", str(lib), str(src)], check=True, capture_output=True, timeout=120)
    return ctypes.CDLL(str(lib))


def samples() -> list[bytes]:
    q = dns.message.make_query("svc.test", "A")
    r = dns.message.make_response(q).to_wire()
    msg = bson.encode({"find": "users", "$db": "shop"})
    op_msg = struct.pack("<iiiiI", 21 + len(msg), 1, 0, 2013, 0) + b"\0" + msg
    reply = struct.pack("<iiiiI", 21 + len(msg), 2, 1, 2013, 0) + b"\0" + msg
    kafka_req = struct.pack(">ihhih", 21, 18, 3, 1, 7) + b"rdkafka" + b"\0"
    cql = [b"\x04\x00\x00\x01\x05\x00\x00\x00\x00", b"\x01\x00\x00\x05\x00\x00\x00\x00",
           b"\x84\x00\x00\x01\x06\x00\x00\x00\x02\x00\x00", b"\x04\x00\x00\x02\x07\x00\x00\x00\x0a" + b"\0" * 10]
    return [q.to_wire(), r, struct.pack("!H", len(r)) + r, op_msg, reply, kafka_req, *cql,
            amqp.PROTOCOL_HEADER, frame.marshal(commands.Connection.Start(), 0),
            frame.marshal(commands.Basic.Publish(exchange="e", routing_key="k"), 1), *OTHER_PROTOCOLS]


def inputs() -> list[bytes]:
    rng = random.Random(11)
    out = []
    for s in samples():
        out += [s[:n] for n in range(0, len(s) + 1, max(1, len(s) // 12))] + [s]
        for _ in range(40):  # one flipped byte: structure checks must agree too
            b = bytearray(s)
            b[rng.randrange(len(b))] = rng.randrange(256)
            out.append(bytes(b))
    out += [rng.randbytes(rng.choice((8, 9, 14, 17, 21, 40, 300))) for _ in range(4000)]
    return out


@pytest.mark.parametrize("proto", list(PROTOCOLS))
def test_kernel_and_userspace_detectors_agree(kernel, proto):
    fn = getattr(kernel, f"k_{proto}")
    fn.argtypes = (ctypes.c_char_p, ctypes.c_uint32)
    mismatches, matched = [], 0
    for data in inputs():
        data = data[:MAX_PAYLOAD]
        buf = data + b"\0" * (2 * MAX_PAYLOAD - len(data))  # the kernel reads from a 2x buffer
        k = VERDICT[fn(buf, len(data))]
        u = PROTOCOLS[proto](data)
        matched += k is not None
        if k != u:
            mismatches.append((data[:24].hex(), k, u))
    assert mismatches == [], mismatches[:5]
    assert matched > 0  # the samples of this protocol are recognised at all
