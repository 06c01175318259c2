"""What BCC's compilation of the capture's BPF source produces, kept on disk and loaded again.

BCC (0.26) has no bytecode cache: every start compiles the C source with clang for ~20 s of
CPU. An Image is what loading needs from that compilation: each program's instructions, each
map's definition (type, sizes, entries, flags, BCC's key/leaf type descriptions) and where the
instructions load a map's fd. Cached images are keyed by everything that changes the output:
kernel build, BCC version, every file under bpf/, cflags. Values that change at every start
(the agent's pid, a --pid or --port filter) are compiled as sentinel constants and written
into the instructions at load (Image.patch), so they do not change the key.

ImageBPF is a bcc.BPF made from an Image without compiling: tables, load_func, attach_* and
cleanup behave as BCC's, so callers work with either (capture/loader.py). Not here: which
programs attach where (the loader, capture/tls).
"""
from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import logging
import os
import platform
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the entry layout changes
DEFAULT_DIR = "/var/cache/guardian/bpf"
MAX_ENTRIES = 8  # newest kept; an entry is a few hundred KiB
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

# bpf(2) ABI (include/uapi/linux/bpf.h)
_NR_BPF = 321  # x86_64
_MAP_CREATE, _PROG_LOAD = 0, 5
_LD_IMM64 = 0x18
_PSEUDO_MAP_FD = 1
_INSN = struct.Struct("<BBhi")  # code, dst:4|src:4, off, imm
_ATTR_SIZE = 128
_JMP_CLASSES = (0x05, 0x06)  # BPF_JMP, BPF_JMP32
_ALU_CLASSES = (0x04, 0x07)  # BPF_ALU, BPF_ALU64


class CacheError(Exception):
    """A cache entry that cannot be used (corrupt, partial, of another format)."""


@dataclass(slots=True)
class MapDef:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key_desc: str  # BCC's JSON description of the key type ("" for queues/stacks)
    leaf_desc: str


@dataclass(slots=True)
class Image:
    license: str
    kern_version: int
    maps: list[MapDef]
    programs: dict[str, bytes]  # name -> instructions, map fds zeroed
    map_loads: dict[str, list[tuple[int, str]]]  # name -> [(instruction index, map name)]
    params: dict[str, int] = field(default_factory=dict)  # sentinel -> value, set at load

    def insn_count(self, name: str) -> int:
        return len(self.programs[name]) // 8

    def patched(self, name: str, fds: dict[str, int]) -> bytes:
        """Program `name` ready to load: map fds and parameter values written in."""
        code = bytearray(self.programs[name])
        for idx, map_name in self.map_loads.get(name, ()):
            struct.pack_into("<i", code, idx * 8 + 4, fds[map_name])
        if self.params:
            for at in _constant_sites(code, self.params):
                struct.pack_into("<i", code, at * 8 + 4, self.params[_INSN.unpack_from(code, at * 8)[3]])
        return bytes(code)

    def check_sentinels(self, sentinels: list[int]) -> None:
        """Raise CacheError unless every use of a sentinel is one that patching rewrites
        right: an ALU/jump immediate, or a half of a 64-bit constant whose other half is 0
        (`id & ~0xffffffff == AGENT_PID << 32`). A neighbour value (sentinel +- 1) means the
        compiler turned a comparison into a range, which patching would not follow."""
        near = {s + d for s in sentinels for d in (-1, 1)}
        wanted = set(sentinels)
        for name, code in self.programs.items():
            sites = set(_constant_sites(code, wanted))
            for k in range(0, len(code), 8):
                imm = _INSN.unpack_from(code, k)[3]
                if imm in near or (imm in wanted and k // 8 not in sites):
                    raise CacheError(f"{name}: instruction {k // 8} uses a parameter in a form that "
                                     "cannot be patched")

    def to_json(self) -> bytes:
        body = {
            "license": self.license, "kern_version": self.kern_version,
            "maps": [[m.name, m.type, m.key_size, m.value_size, m.max_entries, m.flags, m.key_desc,
                      m.leaf_desc] for m in self.maps],
            "programs": {n: base64.b64encode(c).decode() for n, c in self.programs.items()},
            "map_loads": self.map_loads,
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Image":
        try:
            body = json.loads(raw)
            maps = [MapDef(*m) for m in body["maps"]]
            programs = {n: base64.b64decode(c, validate=True) for n, c in body["programs"].items()}
            loads = {n: [(int(i), str(m)) for i, m in v] for n, v in body["map_loads"].items()}
            image = cls(str(body["license"]), int(body["kern_version"]), maps, programs, loads)
        except (ValueError, KeyError, TypeError) as e:
            raise CacheError(f"unreadable entry: {e}") from e
        names = {m.name for m in maps}
        for name, code in programs.items():
            if not code or len(code) % 8:
                raise CacheError(f"program {name} has a partial instruction")
            for idx, m in loads.get(name, ()):
                if m not in names or not 0 <= idx < len(code) // 8 or code[idx * 8] != _LD_IMM64:
                    raise CacheError(f"program {name}: map load {idx} -> {m} does not fit")
        return image


def _takes_constant(op: int) -> bool:
    """An ALU or conditional-jump instruction with an immediate operand (BPF_K)."""
    cls, src = op & 0x07, op & 0x08
    if src:
        return False
    if cls in _ALU_CLASSES:
        return True
    return cls in _JMP_CLASSES and (op & 0xf0) not in (0x00, 0x80, 0x90)  # not JA, CALL, EXIT


def _constant_sites(code: bytes | bytearray, values) -> list[int]:
    """Indexes of the instruction slots whose immediate is one of `values` and may be rewritten."""
    out, i, n = [], 0, len(code) // 8
    while i < n:
        op, regs, _off, imm = _INSN.unpack_from(code, i * 8)
        if op == _LD_IMM64 and i + 1 < n:
            high = _INSN.unpack_from(code, i * 8 + 8)[3]
            if not regs >> 4:  # a plain 64-bit constant, not a map reference
                if imm in values and high == 0:
                    out.append(i)
                elif high in values and imm == 0:
                    out.append(i + 1)
            i += 2
            continue
        if imm in values and _takes_constant(op):
            out.append(i)
        i += 1
    return out


# -- building an image from BCC's compilation ---------------------------------------------------
def _libbcc():
    from bcc.libbcc import lib

    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    for fn in (lib.bpf_table_key_size_id, lib.bpf_table_leaf_size_id):
        fn.restype = ctypes.c_size_t
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.bpf_table_fd_id.restype = ctypes.c_int
    lib.bpf_table_fd_id.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return lib


def image_of(module) -> Image:
    """The Image of a compiled BCC module (bcc.BPF.module); raises CacheError if it holds
    something an image cannot carry (a map reference that is not a plain map fd)."""
    lib = _libbcc()
    maps, by_fd = [], {}
    for i in range(lib.bpf_num_tables(module)):
        name = lib.bpf_table_name(module, i).decode()
        fd = lib.bpf_table_fd_id(module, i)
        maps.append(MapDef(name, lib.bpf_table_type_id(module, i), lib.bpf_table_key_size_id(module, i),
                           lib.bpf_table_leaf_size_id(module, i), int(lib.bpf_table_max_entries_id(module, i)),
                           lib.bpf_table_flags_id(module, i),
                           (lib.bpf_table_key_desc(module, name.encode()) or b"").decode(),
                           (lib.bpf_table_leaf_desc(module, name.encode()) or b"").decode()))
        by_fd[fd] = name
    programs, loads = {}, {}
    for i in range(lib.bpf_num_functions(module)):
        name = lib.bpf_function_name(module, i)
        start, size = lib.bpf_function_start(module, name), lib.bpf_function_size(module, name)
        code = bytearray(ctypes.string_at(start, size))
        sites = []
        for k in range(0, len(code), 8):
            op, regs, _off, imm = _INSN.unpack_from(code, k)
            if op != _LD_IMM64 or not regs >> 4:
                continue
            if regs >> 4 != _PSEUDO_MAP_FD or imm not in by_fd:
                raise CacheError(f"{name.decode()}: a map reference of kind {regs >> 4} to fd {imm}")
            sites.append((k // 8, by_fd[imm]))
            struct.pack_into("<i", code, k + 4, 0)
        programs[name.decode()] = bytes(code)
        if sites:
            loads[name.decode()] = sites
    return Image(lib.bpf_module_license(module).decode(), lib.bpf_module_kern_version(module), maps,
                 programs, loads)


# -- the cache on disk ------------------------------------------------------------------------
def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "-"


def kernel_identity() -> str:
    """The running kernel's build: release, version string and its BTF (changes with any rebuild)."""
    uname = platform.uname()
    return f"{uname.release}|{uname.version}|{_file_digest(VMLINUX_BTF)}"


_kernel_digest: str | None = None


def kernel_digest() -> str:
    """A short digest of kernel_identity(), computed once per process."""
    global _kernel_digest
    if _kernel_digest is None:
        _kernel_digest = hashlib.sha256(kernel_identity().encode()).hexdigest()[:24]
    return _kernel_digest


def source_digest(bpf_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(bpf_dir.rglob("*")):
        if p.is_file() and p.suffix in (".c", ".h"):
            h.update(str(p.relative_to(bpf_dir)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def cache_key(bpf_dir: Path, main: str, cflags: list[str]) -> str:
    try:
        from capture.bcclib import import_bcc

        bcc = import_bcc()
        bcc_version = getattr(bcc, "__version__", "?")
    except ImportError:
        bcc_version = "-"
    h = hashlib.sha256()
    for part in (f"format {FORMAT}", bcc_version, kernel_digest(), source_digest(bpf_dir), main,
                 *cflags):
        h.update(part.encode() + b"\n")
    return h.hexdigest()[:32]


class ImageCache:
    """One file per key in a 0700 directory: a digest line, then the image's JSON."""

    def __init__(self, path: str | os.PathLike, max_entries: int = MAX_ENTRIES) -> None:
        self.dir = Path(path)
        self.max_entries = max_entries

    def _entry(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str) -> Image | None:
        """The cached image, None if there is none; CacheError if the entry is damaged."""
        entry = self._entry(key)
        try:
            raw = entry.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CacheError(f"{entry}: {e}") from e
        digest, _, body = raw.partition(b"\n")
        if hashlib.sha256(body).hexdigest().encode() != digest:
            raise CacheError(f"{entry}: digest does not match its content (partial or corrupt)")
        try:
            os.utime(entry)  # recently used: kept longest
        except OSError:
            pass
        return Image.from_json(body)

    def put(self, key: str, image: Image) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)  # it holds code the kernel will run as root
        body = image.to_json()
        tmp = self.dir / f".{key}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
        os.replace(tmp, self._entry(key))  # readers see a whole entry or none
        self._trim()

    def drop(self, key: str) -> None:
        try:
            self._entry(key).unlink()
        except OSError:
            pass

    def _trim(self) -> None:
        entries = sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[self.max_entries:]:
            old.unlink(missing_ok=True)


# -- loading an image without BCC's compiler -----------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    fd = _libc.syscall(_NR_BPF, cmd, attr, _ATTR_SIZE)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


def create_map(m: MapDef) -> int:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIIII", attr, 0, m.type, m.key_size, m.value_size, m.max_entries, m.flags)
    struct.pack_into("16s", attr, 28, m.name.encode()[:15])  # map_name, after inner_map_fd, numa_node
    try:
        return _bpf(_MAP_CREATE, attr)
    except OSError as e:
        raise OSError(e.errno, f"map {m.name}: {e.strerror}") from e


def load_program(name: str, prog_type: int, code: bytes, license: str, kern_version: int,
                 attach_type: int = 0) -> int:
    """bpf(BPF_PROG_LOAD); `attach_type`: the program's expected_attach_type (uprobe_multi links)."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(license.encode())

    def attempt(log_level: int, log_buf) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("<IIQQIIQII16sII", attr, 0, prog_type, len(code) // 8, ctypes.addressof(insns),
                         ctypes.addressof(lic), log_level, len(log_buf) if log_buf else 0,
                         ctypes.addressof(log_buf) if log_buf else 0, kern_version, 0,
                         name.encode()[:15], 0, attach_type)
        return _bpf(_PROG_LOAD, attr)

    try:
        return attempt(0, None)
    except OSError as e:
        verifier = ctypes.create_string_buffer(1 << 20)
        try:
            fd = attempt(1, verifier)
        except OSError:
            tail = verifier.value.decode(errors="replace")[-2000:]
            raise OSError(e.errno, f"program {name}: {e.strerror}\n{tail}") from e
        return fd  # loaded with the log on: a passing problem (memory), keep it


def _bpf_class():
    from capture.bcclib import import_bcc

    return import_bcc().BPF


def image_bpf_class(base: type | None = None) -> type:
    """A bcc.BPF subclass (of `base`, default bcc.BPF) built from an Image instead of C."""
    base = base or _bpf_class()
    from bcc import table as bcc_table
    from bcc.utils import get_possible_cpus

    class ImageBPF(base):
        def __init__(self, image: Image) -> None:  # noqa: D401 — no super().__init__: it compiles
            import atexit

            self.kprobe_fds, self.uprobe_fds, self.tracepoint_fds = {}, {}, {}
            self.raw_tracepoint_fds, self.kfunc_entry_fds, self.kfunc_exit_fds = {}, {}, {}
            self.lsm_fds, self.perf_buffers, self.open_perf_events = {}, {}, {}
            self._ringbuf_manager = None
            self.tracefile = None
            self.debug = 0
            self.funcs, self.tables = {}, {}
            self.module = None
            self.image = image
            self.map_fds: dict[str, int] = {}
            atexit.register(self.cleanup)
            try:
                for m in image.maps:
                    self.map_fds[m.name] = create_map(m)
                self._trace_autoload()
            except BaseException:
                self.cleanup()
                raise

        def load_func(self, func_name, prog_type, device=None, attach_type=-1):
            key = func_name.encode() if isinstance(func_name, str) else func_name
            if key in self.funcs:
                return self.funcs[key]
            name = key.decode()
            if name not in self.image.programs:
                raise Exception(f"Unknown program {name}")
            fd = load_program(name, prog_type, self.image.patched(name, self.map_fds), self.image.license,
                              self.image.kern_version, max(attach_type, 0))
            fn = base.Function(self, key, fd)
            self.funcs[key] = fn
            return fn

        def get_table(self, name, keytype=None, leaftype=None, reducer=None):
            name = name.decode() if isinstance(name, bytes) else name
            m = next((m for m in self.image.maps if m.name == name), None)
            if m is None:
                raise KeyError(name)
            if keytype is None and m.key_desc:
                keytype = base._decode_table_type(json.loads(m.key_desc))
            if leaftype is None:
                leaftype = base._decode_table_type(json.loads(m.leaf_desc))
            return _table(self, m, self.map_fds[name], keytype, leaftype, reducer)

        def _trace_autoload(self) -> None:
            for name in self.image.programs:
                if name.startswith("tracepoint__"):
                    fn = self.load_func(name, base.TRACEPOINT)
                    self.attach_tracepoint(tp=fn.name[len(b"tracepoint__"):].replace(b"__", b":"),
                                           fn_name=fn.name)
                elif name.startswith(("kprobe__", "kretprobe__", "raw_tracepoint__", "kfunc__", "lsm__")):
                    raise Exception(f"program {name}: this kind of autoload is not supported from a cache")

        def dump_func(self, func_name):
            name = func_name.decode() if isinstance(func_name, bytes) else func_name
            return self.image.programs[name]

        def close(self) -> None:
            super().close()  # program fds
            for fd in self.map_fds.values():
                os.close(fd)
            self.map_fds = {}

    def _table(bpf, m: MapDef, fd: int, keytype, leaftype, reducer):
        """A BCC table object over our map: BCC's classes, without their module look-ups."""
        cls = _TABLE_CLASSES.get(m.type)
        if cls is None:
            raise Exception(f"map {m.name}: table type {m.type} is not supported from a cache")
        t = cls.__new__(cls)
        t.bpf, t.map_id, t.map_fd, t.Key, t.Leaf = bpf, -1, fd, keytype, leaftype
        t.ttype, t.flags, t._cbs, t._name, t.max_entries = m.type, m.flags, {}, m.name.encode(), m.max_entries
        if issubclass(cls, (bcc_table.PerCpuArray, bcc_table.PerCpuHash)):
            t.reducer = reducer
            t.sLeaf = leaftype
            t.total_cpu = len(get_possible_cpus())
            t.alignment = ctypes.sizeof(leaftype) % 8
            if t.alignment == 0:
                t.Leaf = leaftype * t.total_cpu
            elif leaftype in (ctypes.c_uint, ctypes.c_int):
                t.Leaf = (ctypes.c_uint64 if leaftype == ctypes.c_uint else ctypes.c_int64) * t.total_cpu
            else:
                raise IndexError("Leaf must be aligned to 8 bytes")
        return t

    _TABLE_CLASSES = {
        1: bcc_table.HashTable, 2: bcc_table.Array, 3: bcc_table.ProgArray, 5: bcc_table.PerCpuHash,
        6: bcc_table.PerCpuArray, 9: bcc_table.LruHash, 10: bcc_table.LruPerCpuHash,
        27: bcc_table.RingBuf,
    }
    return ImageBPF


def compile_in_child(src_file: str, cflags: list[str], timeout_s: float = 1800) -> Image:
    """compile_image in a child process (`python -m capture.bpfcache`): LLVM and clang, and
    the compiler's peak memory, stay out of the calling process. CacheError if it fails."""
    import subprocess
    import sys
    import tempfile

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    with tempfile.NamedTemporaryFile(prefix="guardian-bpf-", suffix=".json") as out:
        cmd = [sys.executable, "-m", "capture.bpfcache", src_file, out.name, *cflags]
        try:
            proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise CacheError(f"compiler process: {e}") from e
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip()[-2000:]
            raise CacheError(f"compiler process exited {proc.returncode}: {tail}")
        return Image.from_json(Path(out.name).read_bytes())


def _compile_main(argv: list[str]) -> int:
    """Child side of compile_in_child: SRC OUT CFLAGS... -> the image's JSON in OUT."""
    src_file, out, *cflags = argv
    image = compile_image(_bpf_class(), src_file, cflags)
    Path(out).write_bytes(image.to_json())
    return 0


def compile_image(bpf_class: type, src_file: str, cflags: list[str]) -> Image:
    """Compile with BCC without loading or attaching anything; the module is freed after."""

    class CompileOnly(bpf_class):
        def _trace_autoload(self) -> None:
            pass

    t0 = time.monotonic()
    b = CompileOnly(src_file=src_file.encode(), cflags=cflags)
    try:
        image = image_of(b.module)
    finally:
        b.cleanup()
    log.debug("compiled %s in %.1f s", src_file, time.monotonic() - t0)
    return image


if __name__ == "__main__":
    import sys

    sys.exit(_compile_main(sys.argv[1:]))
