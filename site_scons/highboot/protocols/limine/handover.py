"""What a Limine kernel is handed, planned at build time.

The responses live in one blob the build lays out: every response a request gets, the strings and
files they point to, and the arrays whose size is known now. Pointers inside the blob are offsets
from its start (listed in ``fixups``): the loader copies the blob into the block's area, adds the
area's direct-map address to each, writes each response's address into its request in the loaded
kernel (``answers``) and fills only what is known at boot, at the offsets planned here (``fills``).
Arrays sized at boot (the memory map, the processors, video modes, the EFI memory map) follow the
blob in the area.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from highboot import __version__
from highboot.errors import HighbootError
from highboot.inputs.kernel import KernelImage, SegmentFlags
from highboot.protocols.limine import spec
from highboot.protocols.limine.scan import LimineKernel
from highboot.units import hex_addr

#: The newest base revision highboot keeps every promise of.
SUPPORTED_REVISION = 4
#: What the bootloader info response says.
BOOTLOADER_NAME = "highboot"
#: The stack a Limine kernel gets when it asks for none, or for less (the protocol's minimum).
MIN_STACK = 64 << 10

#: How each request highboot answers is answered: at build time (the blob holds the whole
#: response) or at boot (the loader fills the fields `fills` names). Requests not listed get no
#: response.
BUILD = ("bootloader_info", "executable_cmdline", "firmware_type", "stack_size", "paging_mode", "entry_point",
         "keep_iommu")
BOOT = ("hhdm", "framebuffer", "mp", "memmap", "executable_file", "module", "rsdp", "smbios", "efi_system_table",
        "efi_memmap", "date_at_boot", "executable_address", "bootloader_performance", "tsc_frequency")
#: Answered only when the machine has the thing (else the response stays NULL, as the protocol says).
IF_PRESENT = ("framebuffer", "rsdp", "smbios", "mp", "tsc_frequency")


@dataclass(frozen=True)
class Answer:
    """Write the response at blob offset ``response`` into the request at ``request_va`` (link
    address; the loader adds the kernel's slide), always or only when ``when`` was found at boot."""

    request: str
    request_va: int
    response: int
    when: str = ""  # "" always, else the name of the request whose thing must be present


@dataclass(frozen=True)
class LimineHandover:
    """The Limine protocol's part of a boot plan."""

    base_revision: int  # the revision the kernel asked for
    revision: int  # the revision highboot boots it with
    tag_va: int | None  # the base revision tag (link address)
    supported: bool  # the tag's last word is zeroed: the revision asked for is kept
    blob: str  # hex
    fixups: tuple[int, ...]
    answers: tuple[Answer, ...]
    #: Offsets in the blob of what the loader fills at boot: a response ("hhdm", "memmap", ...), the
    #: executable's struct limine_file ("executable_file") and each module's ("module.<n>").
    fills: tuple[tuple[str, int], ...]
    stack_size: int
    entry: int | None  # the entry point request's entry (link address), or None: the ELF's
    paging_mode: int
    unanswered: tuple[tuple[str, str], ...] = field(default=())  # (request, why) for `scons map`

    def fill(self, name: str) -> int | None:
        return dict(self.fills).get(name)

    @property
    def module_files(self) -> tuple[int, ...]:
        """Each module's struct limine_file in the blob, in order."""
        fills = dict(self.fills)
        return tuple(fills[f"module.{n}"] for n in range(len(fills)) if f"module.{n}" in fills)

    @property
    def blob_bytes(self) -> bytes:
        return bytes.fromhex(self.blob)


class _Blob:
    """The responses' bytes, laid out as they are added, 8-byte aligned."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.fixups: list[int] = []

    def add(self, size: int) -> int:
        at = (len(self.data) + 7) & ~7
        self.data += bytes(at + size - len(self.data))
        return at

    def put(self, at: int, st: spec.Struct, **values: int) -> None:
        offsets = st.offsets()
        for f in st.fields:
            if f.name in values:
                fmt = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}[f.size]
                struct.pack_into(fmt, self.data, at + offsets[f.name], values[f.name] % (1 << 8 * f.size))

    def pointer(self, at: int, target: int) -> None:
        """An area-relative pointer at `at` to blob offset `target`."""
        struct.pack_into("<Q", self.data, at, target)
        self.fixups.append(at)

    def string(self, text: str) -> int:
        raw = text.encode("utf-8", "surrogateescape") + b"\0"  # a command line is bytes (cmdline checks NULs)
        at = self.add(len(raw))
        self.data[at:at + len(raw)] = raw
        return at


def plan_handover(kernel: KernelImage, marks: LimineKernel, *, levels: int, cmdline: str, kernel_esp_path: str,
                  modules: tuple[tuple[str, str, int], ...]) -> LimineHandover:
    """The handover of a Limine kernel (placed where it runs at slide 0): `modules` are (ESP path,
    string, size) in the order the module response lists them; `levels` is the layout's paging
    depth."""
    if marks.base_revision > SUPPORTED_REVISION:
        known = f"; revisions up to {spec.REVISIONS[-1].number} are defined" if marks.base_revision > \
            spec.REVISIONS[-1].number else ""
        raise HighbootError(f"the kernel asks for Limine base revision {marks.base_revision}{known}; highboot keeps "
                            f"the promises of revisions 0 to {SUPPORTED_REVISION} (a Limine loader refuses such a "
                            f"kernel or boots it with a revision it does not ask for)", file=kernel.path,
                            field=f"Limine base revision tag at {hex_addr(marks.tag_vaddr or 0)}")
    revision = marks.base_revision
    blob = _Blob()
    answers: list[Answer] = []
    fills: list[tuple[str, int]] = []
    unanswered: list[tuple[str, str]] = []
    stack_size, entry = MIN_STACK, None
    mode = spec.PAGING_MODE_5LVL if levels == 5 else spec.PAGING_MODE_4LVL

    def refuse(message: str, at: int) -> HighbootError:
        return HighbootError(message, file=kernel.path, field=f"Limine request at {hex_addr(at)}")

    for req in marks.requests:
        known = req.known
        if known is None:
            unanswered.append((req.name, "an ID the protocol does not define: its response stays NULL"))
            continue
        if known.name not in BUILD + BOOT:
            unanswered.append((known.name, "not on x86-64 UEFI: its response stays NULL"))
            continue
        response = blob.add(known.response.size)
        # Every response starts with its revision; highboot gives the ones it fills completely.
        # (The module response stays at revision 0 until the kernel's internal modules are loaded.)
        response_revision = {"framebuffer": 1}.get(known.name, 0)
        blob.put(response, known.response, revision=response_revision)
        r = known.response.offsets()
        name = known.name
        if name == "bootloader_info":
            blob.pointer(response + r["name"], blob.string(BOOTLOADER_NAME))
            blob.pointer(response + r["version"], blob.string(__version__))
        elif name == "executable_cmdline":
            blob.pointer(response + r["cmdline"], blob.string(cmdline))
        elif name == "firmware_type":
            blob.put(response, known.response, firmware_type=spec.FIRMWARE_TYPE_EFI64)
        elif name == "stack_size":
            stack_size = max(MIN_STACK, (req.field("stack_size") + 15) & ~15)
        elif name == "paging_mode":
            low = req.field("min_mode") if req.revision >= 1 else spec.PAGING_MODE_4LVL
            high = req.field("max_mode") if req.revision >= 1 else req.field("mode")
            if not low <= mode <= high:
                names = {spec.PAGING_MODE_4LVL: "4-level", spec.PAGING_MODE_5LVL: "5-level"}
                raise refuse(f"the kernel asks for {names.get(low, low)} to {names.get(high, high)} paging; the "
                             f"layout gives {levels}-level paging (choose a layout of another depth: "
                             f"LAYOUT=templates/layouts/linux-x86_64{'-la57' if levels == 4 else ''}.toml)",
                             req.vaddr)
            blob.put(response, known.response, mode=mode)
        elif name == "entry_point":
            entry = req.field("entry")
            if not any(s.flags & SegmentFlags.EXECUTE and s.vaddr <= entry < s.end for s in kernel.segments):
                raise refuse(f"the entry point request's entry {hex_addr(entry)} is not in an executable segment",
                             req.vaddr)
        elif name == "executable_file":
            file = _file(blob, kernel_esp_path, cmdline, kernel.size)
            blob.pointer(response + r["executable_file"], file)
            fills.append(("executable_file", file))
        elif name == "module":
            if not modules:
                unanswered.append((name, "no modules: its response stays NULL"))
                blob.data = blob.data[:response]
                continue
            array = blob.add(8 * len(modules))
            blob.put(response, known.response, module_count=len(modules))
            blob.pointer(response + r["modules"], array)
            for n, (path, string, size) in enumerate(modules):
                file = _file(blob, path, string, size)
                blob.pointer(array + 8 * n, file)
                fills.append((f"module.{n}", file))
        else:
            fills.append((name, response))
        answers.append(Answer(name, req.vaddr, response, name if name in IF_PRESENT else ""))
    return LimineHandover(
        base_revision=marks.base_revision, revision=revision, tag_va=marks.tag_vaddr,
        supported=marks.base_revision <= SUPPORTED_REVISION, blob=blob.data.hex(), fixups=tuple(blob.fixups),
        answers=tuple(answers), fills=tuple(fills), stack_size=stack_size, entry=entry, paging_mode=mode,
        unanswered=tuple(unanswered))


def _file(blob: _Blob, esp_path: str, string: str, size: int) -> int:
    """A struct limine_file for a file on the ESP (its address filled at boot)."""
    path = blob.string("/" + esp_path.replace("\\", "/").lstrip("/"))
    text = blob.string(string)
    at = blob.add(spec.FILE.size)
    o = spec.FILE.offsets()
    blob.put(at, spec.FILE, size=size, media_type=spec.MEDIA_TYPE_GENERIC)
    blob.pointer(at + o["path"], path)
    blob.pointer(at + o["string"], text)
    return at
