"""The memo of ELF files read at earlier starts: kept by file identity, forgotten when the file
or the deciding code changes, harmless when damaged."""
from __future__ import annotations

import os

from capture.tls import notls


def test_a_remembered_file_is_known_until_it_changes(tmp_path):
    lib = tmp_path / "libthing.so"
    lib.write_bytes(b"\x7fELF" + b"\0" * 60)
    memo = notls.NoTlsMemo(str(tmp_path / "cache"))
    stamp = notls.file_stamp(str(lib))
    assert memo.get(stamp) is None
    memo.add(stamp, "")
    other = tmp_path / "libtls.so"
    other.write_bytes(b"\x7fELF" + b"\1" * 60)
    memo.add_tls(notls.file_stamp(str(other)), "openssl", [(0x1234, "tls_openssl_write", False)])
    memo.save()

    again = notls.NoTlsMemo(str(tmp_path / "cache"))
    assert again.get(stamp) == ""
    assert again.tls_probes(notls.file_stamp(str(other))) == ("openssl", [(0x1234, "tls_openssl_write", False)])
    os.utime(lib, ns=(1, 1))  # rewritten: a new stamp, read again
    assert again.get(notls.file_stamp(str(lib))) is None


def test_a_memo_of_other_code_or_damaged_is_ignored(tmp_path):
    memo = notls.NoTlsMemo(str(tmp_path))
    memo.add("1:2:3:4", "")
    memo.save()
    assert notls.NoTlsMemo(str(tmp_path)).get("1:2:3:4") == ""
    memo_file = tmp_path / "notls.json"
    memo_file.write_text(memo_file.read_text().replace(memo.version, "0" * 16))
    assert notls.NoTlsMemo(str(tmp_path)).get("1:2:3:4") is None
    memo_file.write_text("{not json")
    assert notls.NoTlsMemo(str(tmp_path)).get("1:2:3:4") is None


def test_off_keeps_nothing(tmp_path):
    memo = notls.NoTlsMemo("off")
    memo.add("1:2:3:4", "")
    memo.save()
    assert memo.path is None and not list(tmp_path.iterdir())


def test_tls_files_still_in_place_are_listed_latest_first_and_bounded(tmp_path):
    memo = notls.NoTlsMemo(str(tmp_path / "cache"))
    files = []
    for i in range(4):
        f = tmp_path / f"client-{i}"
        f.write_bytes(b"\x7fELF" + bytes([i]) * 60)
        memo.add_tls(notls.file_stamp(str(f)), "go", [(0x10 + i, "tls_go_write", False)], str(f))
        files.append(f)
    memo.add_tls("9:9:9:9", "openssl", [(0x99, "tls_openssl_read", False)])  # no path: an older memo's
    memo.save()
    again = notls.NoTlsMemo(str(tmp_path / "cache"))
    assert again.tls_files(10) == [str(f) for f in reversed(files)]
    assert again.tls_probes(notls.file_stamp(str(files[0]))) == ("go", [(0x10, "tls_go_write", False)])
    os.utime(files[3], ns=(1, 1))  # rewritten since: its probes may be elsewhere
    files[2].unlink()
    assert again.tls_files(10) == [str(files[1]), str(files[0])]
    assert again.tls_files(1) == [str(files[1])]
