"""The handover seam (site_scons/highboot/protocols): what each protocol decides is complete and
consistent, and a build picks its protocol from the PROTOCOL option or the kernel."""

from __future__ import annotations

import pytest

from highboot.errors import HighbootError
from highboot.inputs.kernel import read_kernel
from highboot.protocols import AUTO, PROTOCOLS, bootinfo, protocol_for, protocol_named
from highboot.protocols.base import Gdt, MemoryKind
from highboot.protocols.highboot import HIGHBOOT


@pytest.mark.parametrize("protocol", PROTOCOLS.values(), ids=list(PROTOCOLS))
def test_a_protocol_decides_everything(protocol) -> None:
    # Every kind of memory the loader tells apart has a number, and no two share one unless the
    # protocol has fewer types (then the loader would merge them: only allowed for these).
    assert set(protocol.memory_types) == set(MemoryKind)
    # The GDT's selectors name 64-bit code and writable data, below the table's end.
    gdt = protocol.gdt
    assert max(gdt.code_selector, gdt.data_selector) < 8 * len(gdt.entries)
    assert gdt.entries[gdt.code_selector // 8] >> 53 & 3 == 0b01  # L=1, D=0
    assert gdt.entries[gdt.data_selector // 8] >> 43 & 1 == 0  # data, not code


def test_highboot_memory_types_are_the_boot_info_abi() -> None:
    # The numbers a highboot kernel reads in its memory map are the ABI's HIGHBOOT_MEM_* (bootinfo.py).
    abi = {c.name: c.value for c in bootinfo.MEMORY_TYPES}
    assert {kind.name: n for kind, n in HIGHBOOT.memory_types.items()} == abi
    assert len(set(HIGHBOOT.memory_types.values())) == len(MemoryKind)


def test_a_gdt_that_names_the_wrong_entries_is_refused() -> None:
    with pytest.raises(AssertionError):
        Gdt(entries=(0, 0x00CF92000000FFFF, 0x00AF9A000000FFFF), code_selector=0x08, data_selector=0x10)


def test_a_kernel_of_no_other_protocol_is_highboots(built) -> None:
    kernel = read_kernel(str(built["kernel"]))
    assert protocol_for(kernel, AUTO) is HIGHBOOT
    assert protocol_for(kernel, "highboot") is HIGHBOOT


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(HighbootError) as err:
        protocol_named("multiboot9")
    assert err.value.field == "PROTOCOL" and "highboot" in str(err.value)
