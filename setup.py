"""Builds capture/_ring.c (the ring buffer's per-record loops in C) with the machine's compiler;
everything else is in pyproject.toml. Without a compiler the capture runs its Python loops.
Portable flags only: never -march=native (CPUs may advertise instructions that fault)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("capture._ring", ["capture/_ring.c"], extra_compile_args=["-O2", "-std=gnu11"],
                             optional=True)])
