"""The BPF compile cache: entries on disk (digest, bound, key), constant patching, and live: a
corrupt entry falls back to a compile, a warm start loads the same programs and gives the same
spans, and the cached programs are byte for byte what BCC compiles with the real values."""
from __future__ import annotations

import shutil
import stat
import struct

import pytest
import requests

from capture import abi, bpfcache
from capture.loader import SENTINEL_AGENT_PID, SENTINEL_FILTER_PORT, Loader
from capture.live import CaptureOptions
from support.http_servers import python_server
from support.live import ebpf_or_skip, live_capture


def insn(op: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", op, src << 4 | dst, off, imm)


def small_image() -> bpfcache.Image:
    code = (insn(0x18, 1, 1, imm=0) + insn(0)  # ld_imm64 r1 = map fd (pseudo map fd)
            + insn(0x15, 2, imm=SENTINEL_FILTER_PORT, off=1)  # if r2 == port goto +1
            + insn(0x18, 3, imm=0) + insn(0, imm=SENTINEL_AGENT_PID)  # r3 = AGENT_PID << 32
            + insn(0xb7, 0, imm=0) + insn(0x95))  # r0 = 0; exit
    maps = [bpfcache.MapDef("stats", 6, 4, 8, 4, 0, '"int"', '"unsigned long long"')]
    return bpfcache.Image("GPL", 0, maps, {"prog": code}, {"prog": [(0, "stats")]})


def test_an_entry_round_trips_in_a_private_directory(tmp_path):
    cache = bpfcache.ImageCache(tmp_path / "bpf")
    assert cache.get("k") is None
    cache.put("k", small_image())
    got = cache.get("k")
    assert got.programs == small_image().programs and got.maps == small_image().maps
    assert got.map_loads == {"prog": [(0, "stats")]}
    assert stat.S_IMODE((tmp_path / "bpf").stat().st_mode) == 0o700


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_a_corrupt_or_partial_entry_is_refused(tmp_path, damage):
    cache = bpfcache.ImageCache(tmp_path)
    cache.put("k", small_image())
    entry = tmp_path / "k.json"
    raw = entry.read_bytes()
    entry.write_bytes({"flip": raw[:-10] + bytes([raw[-10] ^ 1]) + raw[-9:], "truncate": raw[:len(raw) // 2],
                       "empty": b"", "garbage": b"\x00\xff" * 50}[damage])
    with pytest.raises(bpfcache.CacheError):
        cache.get("k")


def test_a_well_formed_entry_whose_map_loads_do_not_fit_is_refused():
    image = small_image()
    image.map_loads = {"prog": [(2, "stats")]}  # instruction 2 is a jump, not a 64-bit load
    with pytest.raises(bpfcache.CacheError):
        bpfcache.Image.from_json(image.to_json())


def test_the_cache_keeps_only_its_newest_entries(tmp_path):
    cache = bpfcache.ImageCache(tmp_path, max_entries=3)
    for i in range(6):
        cache.put(f"k{i}", small_image())
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["k3.json", "k4.json", "k5.json"]


def test_the_key_follows_source_and_cflags(tmp_path):
    src = tmp_path / "bpf"
    shutil.copytree(abi.BPF_DIR, src)
    base = bpfcache.cache_key(src, "guardian.bpf.c", ["-DX=1"])
    assert bpfcache.cache_key(src, "guardian.bpf.c", ["-DX=1"]) == base
    assert bpfcache.cache_key(src, "guardian.bpf.c", ["-DX=2"]) != base
    header = next(src.rglob("*.h"))
    header.write_text(header.read_text() + "\n/* changed */\n")
    assert bpfcache.cache_key(src, "guardian.bpf.c", ["-DX=1"]) != base


def test_options_compiled_as_sentinels_share_one_key():
    a, b = Loader(port=8080), Loader(port=9090)
    assert a.template_cflags() == b.template_cflags()
    assert Loader().template_cflags() != a.template_cflags()  # no filter: compiled out


def test_patching_writes_map_fds_and_parameters():
    image = small_image()
    image.params = {SENTINEL_FILTER_PORT: 8080, SENTINEL_AGENT_PID: 4321}
    code = image.patched("prog", {"stats": 77})
    ins = [struct.unpack_from("<BBhi", code, i) for i in range(0, len(code), 8)]
    assert ins[0][3] == 77 and ins[2][3] == 8080 and ins[4][3] == 4321 and ins[3][3] == 0
    image.check_sentinels([SENTINEL_FILTER_PORT, SENTINEL_AGENT_PID])


@pytest.mark.parametrize("bad", [insn(0x15, 2, imm=SENTINEL_FILTER_PORT + 1),  # a range: port + 1
                                 insn(0x62, 10, off=-8, imm=SENTINEL_AGENT_PID)])  # stored, not compared
def test_a_parameter_used_in_a_form_patching_cannot_follow_is_refused(bad):
    image = small_image()
    image.programs["prog"] = image.programs["prog"][:-8] + bad + insn(0x95)
    with pytest.raises(bpfcache.CacheError):
        image.check_sentinels([SENTINEL_FILTER_PORT, SENTINEL_AGENT_PID])


# -- live -------------------------------------------------------------------------------------
def _requests(port: int) -> None:
    with requests.Session() as http:
        for path in ("/a", "/status/404", "/b", "/status/503"):
            http.get(f"http://127.0.0.1:{port}{path}")


def _shape(spans: list[dict]) -> list[tuple]:
    return sorted((s["kind"], s["attributes"].get("http.request.method"), s["attributes"].get("url.path"),
                   s["attributes"].get("http.response.status_code")) for s in spans)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One cache for the live tests here: the second reuses what the first compiled."""
    return tmp_path_factory.mktemp("bpfcache")


@pytest.mark.ebpf
@pytest.mark.slow
def test_corrupt_entry_compiles_again_and_the_warm_start_gives_the_same_spans(cache_dir, monkeypatch):
    ebpf_or_skip()
    tmp_path = cache_dir
    monkeypatch.setenv("GUARDIAN_CAPTURE_BPF_CACHE", str(tmp_path))
    with python_server() as (port, _server):
        loader = Loader(port=port, pair=CaptureOptions().pair)  # what `guardian capture` builds
        key = bpfcache.cache_key(abi.BPF_DIR, "guardian.bpf.c", loader.template_cflags())
        (tmp_path / f"{key}.json").write_bytes(b"0" * 64 + b"\n{\"half\": ")  # a partial write
        with live_capture(port=port) as cold:
            _requests(port)
        with live_capture(port=port) as warm:
            _requests(port)
    assert "compiling again" in cold.stderr and "compiling the eBPF programs" in cold.stderr
    assert "from the compile cache" in warm.stderr and "compiling" not in warm.stderr
    assert len(cold.spans) == 8, cold.stderr
    assert _shape(warm.spans) == _shape(cold.spans)
    image = bpfcache.ImageCache(tmp_path).get(key)  # the fallback wrote a good entry
    assert image is not None and len(image.programs) > 30


@pytest.mark.ebpf
@pytest.mark.slow
def test_cached_programs_are_byte_for_byte_what_bcc_compiles_with_the_real_values(cache_dir):
    """The cache compiles the agent's pid and the port as sentinels and patches them at load:
    that must give exactly the instructions BCC makes from the real values."""
    ebpf_or_skip()
    from bcc import BPF

    loader = Loader(port=8443, cache_dir=str(cache_dir), pair=CaptureOptions().pair)
    src = str(abi.BPF_DIR / "guardian.bpf.c")
    key = bpfcache.cache_key(abi.BPF_DIR, "guardian.bpf.c", loader.template_cflags())
    cached = bpfcache.ImageCache(cache_dir).get(key) or bpfcache.compile_image(BPF, src, loader.template_cflags())
    cached.check_sentinels(list(loader.params()))
    cached.params = loader.params()
    real = bpfcache.compile_image(BPF, src, loader.cflags)  # what the BCC path loads, fds zeroed
    assert cached.maps == real.maps
    assert sorted(cached.programs) == sorted(real.programs)
    zero = {m.name: 0 for m in cached.maps}
    for name, code in real.programs.items():
        assert cached.insn_count(name) == len(code) // 8, name
        assert cached.patched(name, zero) == code, name
