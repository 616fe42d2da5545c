"""What the kernel is handed at entry and how: one Protocol per build (base: what a protocol
decides): highboot's own (highboot, with its boot info ABI in bootinfo, described once and rendered
to Rust and C) and the Limine boot protocol (limine). Planning the address space does not depend
on the protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from highboot.errors import HighbootError
from highboot.protocols.base import Protocol
from highboot.protocols.highboot import HIGHBOOT
from highboot.protocols.limine import LIMINE

if TYPE_CHECKING:
    from highboot.inputs.kernel import KernelImage

#: Every protocol a build can speak, by the PROTOCOL option's value.
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (HIGHBOOT, LIMINE)}
#: The PROTOCOL option's value that reads the protocol from the kernel.
AUTO = "auto"


def protocol_named(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise HighbootError(f"unknown boot protocol {name!r}; expected one of: {', '.join(PROTOCOLS)}",
                            field="PROTOCOL") from None


def protocol_for(kernel: KernelImage, chosen: str = AUTO) -> Protocol:
    """The protocol a build speaks: the one chosen, or the one whose marks the kernel carries
    (highboot's when it carries none). Marks of two protocols and no choice: refused."""
    if chosen != AUTO:
        return protocol_named(chosen)
    marked = [p for p in PROTOCOLS.values() if p.recognises(kernel)]
    if len(marked) > 1:
        raise HighbootError(f"the kernel carries the marks of {' and '.join(p.title for p in marked)}; choose one "
                            f"with PROTOCOL={'|'.join(p.name for p in marked)} (or protocol = \"...\" in the project "
                            f"file)", file=kernel.path, field="PROTOCOL")
    return marked[0] if marked else HIGHBOOT
