"""A Limine kernel's requests, found at build time (site_scons/highboot/protocols/limine/scan.py),
in small ELF files written here: the markers' rules, the base revision tag, request fields, internal
modules whose pointers live only in relocation addends, and every refusal naming the address."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from elfgen import KBASE, PF_R, PF_W, R_X86_64_RELATIVE, Seg, dyn_pie, rela, sample
from highboot.errors import HighbootError
from highboot.inputs.kernel import read_kernel
from highboot.protocols import AUTO, protocol_for
from highboot.protocols.highboot import HIGHBOOT
from highboot.protocols.limine import LIMINE
from highboot.protocols.limine.handover import LimineHandover, plan_handover
from highboot.protocols.limine.scan import carries_marks, scan

# The protocol's numbers, written out here from the specification (not taken from spec.py).
MAGIC = (0xC7B1DD30DF4C8B88, 0x0A82E883A194F07B)
TAG = (0xF9562B2D5C95A6C8, 0x6A7B384944536BDC)
START = (0xF6B8F4B39DE7D1AE, 0xFAB91A6940FCB9CF, 0x785C6ED015D3E316, 0x181E920A7852B9D9)
END = (0xADC0E0531BB10D03, 0x9572709F31764C62)
HHDM = (0x48DCF1CB8AD2B852, 0x63984E959A98244B)
STACK = (0x224EF0460A8E8926, 0xE1CB0FC25F46EA3D)
PAGING = (0x95C1A0EDAB0944CB, 0xA4E5CB3842F7488A)
MODULE = (0x3E7E279702BE32AF, 0xCA1C4F3BD1280CEE)


def words(*ws: int) -> bytes:
    return struct.pack(f"<{len(ws)}Q", *ws)


def request(rid: tuple[int, int], revision: int = 0, *extra: int) -> bytes:
    return words(*MAGIC, *rid, revision, 0, *extra)


def kernel_with(tmp_path: Path, data: bytes, name: str = "k.elf") -> Path:
    """A fixed kernel whose writable segment starts with data (and has bss after it)."""
    elf = sample(data=0x2000, bss=0x1000)
    rw = elf.segments[-1]
    rw.data = data.ljust(0x2000, b"\0")
    path = tmp_path / name
    path.write_bytes(elf.build())
    return path


def test_a_kernel_without_marks_speaks_highboot(tmp_path: Path) -> None:
    kernel = read_kernel(kernel_with(tmp_path, b"nothing here"))
    assert not carries_marks(kernel)
    assert protocol_for(kernel, AUTO) is HIGHBOOT


def test_requests_between_the_markers(tmp_path: Path) -> None:
    data = (words(*TAG, 2) + words(*START) + request(HHDM) + request(STACK, 0, 0x40000)
            + request(PAGING, 1, 1, 1, 0) + words(*END) + request(HHDM))  # after the end: never looked at
    with pytest.raises(HighbootError):  # the request after the end marker is refused, not ignored
        scan(read_kernel(kernel_with(tmp_path, data)))
    data = data[:-48]
    kernel = read_kernel(kernel_with(tmp_path, data))
    assert protocol_for(kernel, AUTO) is LIMINE
    found = scan(kernel)
    # The tag before the start marker is outside the requests: Limine forgets it, revision 0.
    assert found.base_revision == 0 and found.tag_vaddr is None
    rw = kernel.segments[-1].vaddr
    assert [(r.name, r.vaddr - rw, r.revision) for r in found.requests] == [
        ("hhdm", 56, 0), ("stack_size", 104, 0), ("paging_mode", 160, 1)]
    assert found.request("stack_size").field("stack_size") == 0x40000
    paging = found.request("paging_mode")
    assert (paging.field("mode"), paging.field("max_mode"), paging.field("min_mode")) == (1, 1, 0)
    assert found.markers == (rw + 24, rw + 232)


def test_the_base_revision_tag_and_no_markers(tmp_path: Path) -> None:
    kernel = read_kernel(kernel_with(tmp_path, words(*TAG, 3) + request(HHDM) + request((1, 2), 7)))
    found = scan(kernel)
    assert found.base_revision == 3 and found.tag_vaddr == kernel.segments[-1].vaddr
    # An ID the protocol does not define is kept: it gets no response.
    assert [r.known is None for r in found.requests] == [False, True] and found.requests[1].revision == 7


@pytest.mark.parametrize("data, message", [
    (words(*TAG, 1) + words(*TAG, 2), "a second base revision tag"),
    (request(HHDM) + request(HHDM), "a second request with the ID of the one at 0xffffffff80004000 (hhdm)"),
    (request(HHDM) + words(*START) + request(STACK, 0, 1) + words(*END), "a request before the start marker"),
    (words(*START) + request(PAGING, 1, 1) + words(*END), "the paging_mode request (revision 1) needs 72 bytes; "
                                                          "56 are left before the end of the requests"),
    (words(*END) + words(*START), "end marker comes before their start marker"),
])
def test_what_a_limine_loader_would_ignore_or_panic_on_is_refused(tmp_path: Path, data: bytes, message: str) -> None:
    path = kernel_with(tmp_path, data)
    with pytest.raises(HighbootError) as err:
        scan(read_kernel(path))
    assert message in str(err.value) and str(path) in str(err.value)
    assert err.value.field.startswith("Limine request")


def internal_module_kernel(tmp_path: Path, flags: int = 1) -> Path:
    """A PIE linked at 0, as ld.lld leaves one: the module request's array pointer and the module's
    strings are 0 in the file, their values only in R_X86_64_RELATIVE addends."""
    data_at = 0x6000
    req = request(MODULE, 1, 1, 0)  # internal_module_count 1, internal_modules (relocated)
    array_at, record_at, path_at, string_at = data_at + 0x100, data_at + 0x180, data_at + 0x200, data_at + 0x220
    blob = bytearray(0x1000)
    blob[0:len(req)] = req
    blob[0x200:0x200 + 13] = b"./initrd.img\0"
    blob[0x220:0x220 + 6] = b"quiet\0"
    blob[0x300:0x318] = words(*TAG, 3)
    struct.pack_into("<Q", blob, 0x180 + 16, flags)
    relocs = rela((data_at + 56, R_X86_64_RELATIVE, array_at), (array_at, R_X86_64_RELATIVE, record_at),
                  (record_at, R_X86_64_RELATIVE, path_at), (record_at + 8, R_X86_64_RELATIVE, string_at))
    path = tmp_path / "pie.elf"
    path.write_bytes(dyn_pie(rela=relocs, data=bytes(blob)).build())
    return path


def test_internal_modules_through_relocations(tmp_path: Path) -> None:
    found = scan(read_kernel(internal_module_kernel(tmp_path)))
    assert [(m.path, m.string, m.required) for m in found.internal_modules] == [("./initrd.img", "quiet", True)]


def plan_modules_of(path: Path, modules: tuple[tuple[str, str, int, str], ...]) -> LimineHandover:
    kernel = read_kernel(path)
    return plan_handover(kernel, scan(kernel), levels=4, cmdline="", kernel_esp_path="highboot/kernel.elf",
                         modules=modules)


def test_internal_modules_are_the_builds_modules_of_that_name_listed_first(tmp_path: Path) -> None:
    h = plan_modules_of(internal_module_kernel(tmp_path), (("highboot/modules/0.bin", "font", 10, "font.psf"),
                                                           ("highboot/modules/1.bin", "root=x", 20, "initrd.img")))
    blob = h.blob_bytes
    response = h.answers[0].response
    revision, count, array = struct.unpack_from("<QQQ", blob, response)
    assert (revision, count) == (1, 2)  # revision 1: internal modules honoured
    files = struct.unpack_from("<2Q", blob, array)
    # The internal module first, with the kernel's string; then the other module, with its own.
    listed = []
    for file in files:
        size, path, string = struct.unpack_from("<QQQ", blob, file + 16)
        listed.append((size, blob[path:blob.index(b"\0", path)], blob[string:blob.index(b"\0", string)]))
    # Paths are the names, from the kernel's directory, as Limine resolves an internal module's path.
    assert listed == [(20, b"/highboot/initrd.img", b"quiet"), (10, b"/highboot/font.psf", b"font")]
    # The loader fills each file's address from the module at its index in the build's list.
    assert sorted(n for _, n in h.module_files) == [0, 1] and dict((o, n) for o, n in h.module_files)[files[0]] == 1


def test_a_required_internal_module_the_build_lacks_stops_the_build(tmp_path: Path) -> None:
    path = internal_module_kernel(tmp_path)
    with pytest.raises(HighbootError) as err:
        plan_modules_of(path, (("highboot/modules/0.bin", "", 10, "font.psf"),))
    assert "requires the internal module './initrd.img'" in str(err.value) and "name = 'initrd.img'" in str(err.value)


def test_an_optional_internal_module_the_build_lacks_is_left_out(tmp_path: Path) -> None:
    h = plan_modules_of(internal_module_kernel(tmp_path, flags=0), (("highboot/modules/0.bin", "", 10, "font.psf"),))
    assert dict(h.unanswered)["internal module ./initrd.img"].startswith("optional")
    assert struct.unpack_from("<QQ", h.blob_bytes, h.answers[0].response) == (1, 1)


def test_a_module_pointer_outside_the_image_is_refused(tmp_path: Path) -> None:
    data = request(MODULE, 1, 1, KBASE + 0x100000)
    path = kernel_with(tmp_path, data)
    with pytest.raises(HighbootError) as err:
        scan(read_kernel(path))
    assert "internal_modules array (0xffffffff80100000, 8 bytes) is not in the loaded image" in str(err.value)


def test_requests_in_the_zero_fill_are_not_there(tmp_path: Path) -> None:
    # Only file bytes are scanned: a segment's zero-fill (bss) holds nothing.
    elf = sample(data=0x1000, bss=0x3000)
    elf.segments.append(Seg(KBASE + 0x10000, 0x1000, PF_R | PF_W, b""))
    path = tmp_path / "k.elf"
    path.write_bytes(elf.build())
    assert scan(read_kernel(path)).requests == ()


# ----------------------------------------------------------------------------- the handover, planned

BOOTLOADER_INFO = (0xF55038D8E2A1202F, 0x279426FCF5F59740)
FIRMWARE = (0x8C2F75D90BEF28A8, 0x7045A4688EAC00C3)
ENTRY = (0x13D86C035A1CD3E1, 0x2B0CAA89D8F3026A)
DTB = (0xB40DDB48FB54BAC7, 0x545081493F81FFB7)
FILE = (0xAD97E90E83F1ED67, 0x31EB5D1C5FF23B69)


def handover(tmp_path: Path, data: bytes, levels: int = 4, **kw: object) -> LimineHandover:
    """The handover planned for a kernel whose data holds `data` (after a revision 2 tag unless it
    has its own)."""
    if struct.pack("<2Q", *TAG) not in data:
        data = words(*TAG, 2) + data
    kernel = read_kernel(kernel_with(tmp_path, data))
    args = {"levels": levels, "cmdline": "console=ttyS0", "kernel_esp_path": "highboot/kernel.elf", "modules": ()}
    args.update(kw)
    return plan_handover(kernel, scan(kernel), **args)  # type: ignore[arg-type]


def test_build_time_responses_are_in_the_blob(tmp_path: Path) -> None:
    h = handover(tmp_path, words(*TAG, 2) + request(BOOTLOADER_INFO) + request(FIRMWARE) + request(STACK, 0, 100)
                 + request(ENTRY, 0, KBASE + 0x10) + request(DTB) + request(FILE))
    assert (h.base_revision, h.revision, h.supported) == (2, 2, True)
    rw = KBASE + 0x4000
    assert [(a.request, a.request_va - rw) for a in h.answers] == [
        ("bootloader_info", 24), ("firmware_type", 72), ("stack_size", 120), ("entry_point", 176),
        ("executable_file", 280)]
    assert dict(h.unanswered)["dtb"].startswith("no device tree on ACPI machines")
    blob = h.blob_bytes

    def string(at: int) -> bytes:
        return blob[at:blob.index(b"\0", at)]

    info = next(a.response for a in h.answers if a.request == "bootloader_info")
    name, version = struct.unpack_from("<QQ", blob, info + 8)
    assert string(name) == b"highboot" and string(version)
    assert {info + 8, info + 16} <= set(h.fixups)  # pointers the loader moves to the area's address
    firmware = next(a.response for a in h.answers if a.request == "firmware_type")
    assert struct.unpack_from("<QQ", blob, firmware) == (0, 2)  # revision 0, 64-bit UEFI
    assert h.stack_size == 64 << 10  # at least the protocol's 64 KiB
    assert h.entry == KBASE + 0x10
    file = struct.unpack_from("<Q", blob, next(a.response for a in h.answers if a.request == "executable_file") + 8)[0]
    assert struct.unpack_from("<Q", blob, file + 16)[0] == 0x7000  # the file's size, known now
    path, cmdline = struct.unpack_from("<QQ", blob, file + 24)
    assert string(path) == b"/highboot/kernel.elf" and string(cmdline) == b"console=ttyS0"
    assert h.fill("executable_file") == file


def test_a_revision_newer_than_highboot_keeps_boots_with_its_newest_unacknowledged(tmp_path: Path) -> None:
    h = handover(tmp_path, words(*TAG, 9))
    assert (h.base_revision, h.revision, h.supported) == (9, 6, False)
    assert ("base revision", "the kernel asks for revision 9, newer than highboot keeps: booted with revision 6, "
            "the tag left unacknowledged (LIMINE_BASE_REVISION_SUPPORTED is false for the kernel)") in h.unanswered
    h = handover(tmp_path, words(*TAG, 6))
    assert (h.revision, h.supported) == (6, True)


def test_a_stack_size_above_the_minimum_is_kept(tmp_path: Path) -> None:
    assert handover(tmp_path, request(STACK, 0, 0x40001)).stack_size == 0x41000  # whole pages


@pytest.mark.parametrize("data, levels, message", [
    (request(PAGING, 1, 0, 0, 2), 4, "the kernel asks for 2 to 4-level paging; the layout gives 4-level"),
    (request(PAGING, 1, 0, 0, 0), 5, "the kernel asks for 4-level to 4-level paging; the layout gives 5-level"),
    (request(ENTRY, 0, KBASE + 0x4000), 4, "entry 0xffffffff80004000 is not in an executable segment"),
    (request(HHDM), 5, "no paging mode request: a Limine loader gives it 4-level paging; the layout gives "
                       "5-level paging"),
])
def test_what_the_build_cannot_give_is_refused(tmp_path: Path, data: bytes, levels: int, message: str) -> None:
    with pytest.raises(HighbootError) as err:
        handover(tmp_path, data, levels)
    assert message in str(err.value)


ENTROPY = (0x65EA80255D5682C5, 0x9117240723F493EB)


def test_entropy_gets_an_array_of_the_words_asked_for_4096_at_most(tmp_path: Path) -> None:
    h = handover(tmp_path, request(ENTROPY, 0, 5000))
    revision, count, values = struct.unpack_from("<QQQ", h.blob_bytes, h.answers[0].response)
    assert (revision, count) == (0, 4096) and h.answers[0].response + 16 in h.fixups  # values: area-relative
    assert h.fill("entropy") == values and h.fill("entropy.count") == 4096
    assert len(h.blob_bytes) >= values + 8 * 4096


def test_the_paging_mode_is_the_layouts(tmp_path: Path) -> None:
    h = handover(tmp_path, request(PAGING, 1, 0, 1, 0), levels=4)
    assert (h.paging_mode, h.la57_at_boot, h.fill("paging_mode")) == (0, False, None)
    response = h.answers[0].response
    assert struct.unpack_from("<QQ", h.blob_bytes, response) == (0, 0)
    h = handover(tmp_path, request(PAGING, 0, 1), levels=5)
    assert (h.paging_mode, h.la57_at_boot) == (1, False)


@pytest.mark.parametrize("data, required", [
    (request(PAGING, 1, 1, 1, 0), False),  # 5-level preferred, 4-level allowed
    (request(PAGING, 0, 1), False),  # revision 0: the mode, 4-level the fallback
    (request(PAGING, 1, 1, 1, 1), True),  # 5-level only
    (request(PAGING, 1, 0, 1, 1), True),  # the preferred mode below min_mode: min_mode's
    (request(PAGING, 1, 2, 2, 0), False),  # a mode x86-64 has not (2): clamped to 5-level first, as Limine
])
def test_a_kernel_preferring_five_levels_on_a_four_level_layout_gets_them_at_boot(
        tmp_path: Path, data: bytes, required: bool) -> None:
    """The 4-level layout's tables stay as planned; the loader puts them under a 5-level root on a CPU
    with LA57 and writes the response's mode (the fill); the build's blob says 4-level."""
    h = handover(tmp_path, data, levels=4)
    assert (h.paging_mode, h.la57_at_boot, h.la57_required) == (0, True, required)
    response = h.answers[0].response
    assert h.fill("paging_mode") == response
    assert struct.unpack_from("<QQ", h.blob_bytes, response) == (0, 0)
    listed = {r.name: r.answer for r in h.requests}
    assert listed["paging_mode"].startswith("at boot: 5-level paging on a CPU with LA57, else ")
    assert listed["paging_mode"].endswith("refused (the kernel asks for 5-level only)" if required else "4-level")


def test_a_kernel_spanning_most_of_the_address_space_is_scanned_without_its_span(tmp_path: Path) -> None:
    # Segments far apart (a mutated header's; the planner refuses the kernel later): the scan holds
    # each segment's file bytes, never a buffer of the span, and finds the request in the far one.
    elf = sample(data=0x1000, bss=0)
    elf.segments.append(Seg(0x1000, 0x1000, PF_R | PF_W, request(HHDM).ljust(0x1000, b"\0")))
    path = tmp_path / "far.elf"
    path.write_bytes(elf.build())
    found = scan(read_kernel(path))
    assert [(r.name, r.vaddr) for r in found.requests] == [("hhdm", 0x1000)]
