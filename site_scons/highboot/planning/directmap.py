"""The direct map's size: the one rule, as the build uses it. The loader applies the same rule at
boot (loader/src/main.rs, size_direct_map) to what it finds there; the tests' checker
(testkit/bootcheck.py) keeps an independent copy on purpose, to catch both."""

from __future__ import annotations

from highboot.units import GIB

#: The direct map always covers the 32-bit physical space: MMIO and firmware live below 4 GiB.
MINIMUM = 4 * GIB


def direct_map_size(physical_top: int, framebuffer: tuple[int, int] | None = None) -> int:
    """The bytes the direct map covers from physical 0: up to the end of RAM-like memory
    (physical_top), and of the framebuffer (base, size) when there is one, at least 4 GiB, in whole
    GiB."""
    top = max(MINIMUM, physical_top)
    if framebuffer:
        top = max(top, framebuffer[0] + framebuffer[1])
    return (top + GIB - 1) // GIB * GIB
