"""Topologies the lab can run, by name."""
from __future__ import annotations


def load(name: str, workdir: str | None = None, port_base: int | None = None):
    if name == "shop":
        from lab.topologies.shop import Shop

        return Shop(workdir, port_base)
    from lab.topologies.mesh import Mesh
    from lab.topologies.specs import SPECS

    if name not in SPECS:
        raise SystemExit(f"unknown topology {name!r}; known: shop, {', '.join(SPECS)}")
    return Mesh(SPECS[name], workdir, port_base)
