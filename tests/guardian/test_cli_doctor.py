"""The CLI registers every command, and doctor/capture report missing prerequisites clearly."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from capture.errors import CaptureUnavailable
from capture import prereqs as doctor
from guardian.cli import main as cli


def test_every_command_module_registers(capsys):
    for name in cli.COMMANDS:
        mod = importlib.import_module(name)
        assert callable(mod.register), name
    parser = cli.build_parser()
    assert "unavailable" not in capsys.readouterr().err
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 — argparse has no public way
    for expected in ("capture", "doctor"):
        assert expected in commands


@pytest.mark.root
def test_doctor_passes_on_this_machine():
    out = subprocess.run([sys.executable, "-m", "guardian.cli.main", "doctor"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ready for eBPF capture" in out.stdout
    for name in ("privileges", "BTF", "tracefs", "kernel headers", "BCC", "ring buffer", "kprobes"):
        assert name in out.stdout


def test_missing_prerequisites_give_one_clear_message_with_fixes(monkeypatch):
    monkeypatch.setattr(doctor, "CHECKS", (
        lambda: doctor.Check("tracefs", False, "not mounted", "mount -t tracefs nodev /sys/kernel/tracing"),
        lambda: doctor.Check("kernel headers", False, "/lib/modules/x/build missing", "make setup"),
        doctor.check_kprobes,
    ))
    with pytest.raises(CaptureUnavailable) as e:
        doctor.require_ebpf()
    text = str(e.value)
    assert "tracefs: not mounted. Fix: mount -t tracefs" in text
    assert "kernel headers" in text and "make setup" in text
    assert "kprobes" not in text  # absent kprobes are fine


def test_capture_without_prerequisites_exits_with_the_doctor_message(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "CHECKS", (
        lambda: doctor.Check("BTF", False, "/sys/kernel/btf/vmlinux missing", "use a BTF kernel"),))
    rc = cli.main(["capture", "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "eBPF capture cannot run here" in err and "use a BTF kernel" in err
    assert "Traceback" not in err
