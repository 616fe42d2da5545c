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
from collections.abc import Callable
from dataclasses import dataclass, field

from highboot import __version__
from highboot.errors import HighbootError
from highboot.inputs.kernel import KernelImage, SegmentFlags
from highboot.protocols.limine import spec
from highboot.protocols.limine.scan import FoundRequest, LimineKernel
from highboot.units import align_up, hex_addr

PAGE = 4096

#: The base revisions highboot keeps every promise of.
OLDEST_REVISION = 0
SUPPORTED_REVISION = 6
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
        "efi_memmap", "date_at_boot", "executable_address", "bootloader_performance", "tsc_frequency", "entropy")
#: The most random words the entropy response gives (as Limine: a kernel asking for more gets these).
MAX_ENTROPY = 4096
#: Why a request of the protocol gets no response.
WHY_NOT = {"tpm_event_log": "not answered by highboot yet",
           "flanterm_fb_init_params": "highboot draws no terminal", "terminal": "deprecated",
           "five_level_paging": "deprecated (the paging mode request replaces it)",
           "dtb": "no device tree on ACPI machines"}
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
class ListedRequest:
    """A request of the kernel as `scons map` lists it: its ID (the two words after the common
    magic), revision, address and how highboot answers it."""

    name: str
    id: tuple[int, int]
    revision: int
    va: int
    answer: str


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
    #: executable's struct limine_file ("executable_file") and each module's ("module.<n>", n the
    #: module's index in the build's module list; the response lists them in another order).
    fills: tuple[tuple[str, int], ...]
    stack_size: int
    entry: int | None  # the entry point request's entry (link address), or None: the ELF's
    paging_mode: int  # the response's mode as the build writes it (the layout's depth)
    x2apic: bool  # the MP request asks for x2APIC mode
    #: A 4-level layout and a kernel that prefers 5-level paging: on a CPU with LA57 the loader runs
    #: the planned 4-level tables under a 5-level root (their top 128 TiB walk alike in both modes)
    #: and the response says 5-level (the loader writes it: fills "paging_mode").
    la57_at_boot: bool = False
    #: With la57_at_boot: the request's min_mode is 5-level, so a CPU without LA57 is refused at boot.
    la57_required: bool = False
    unanswered: tuple[tuple[str, str], ...] = field(default=())  # (request, why) for `scons map`
    requests: tuple[ListedRequest, ...] = field(default=())

    def fill(self, name: str) -> int | None:
        return dict(self.fills).get(name)

    @property
    def module_files(self) -> tuple[tuple[int, int], ...]:
        """Each module's struct limine_file in the blob and the module's index in the build's list."""
        return tuple((offset, int(name.split(".")[1])) for name, offset in self.fills if name.startswith("module."))

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
                  modules: tuple[tuple[str, str, int, str], ...]) -> LimineHandover:
    """The handover of a Limine kernel (placed where it runs at slide 0): `modules` are the build's
    modules, (ESP path, string, size, name) in order; `levels` is the layout's paging depth.

    The kernel's internal modules (module request revision 1) are resolved against them by name: a
    module of the build named as the internal module's path (a leading "./" or "/" aside) is that
    module, listed first in the module response (as Limine lists internal modules first) with the
    kernel's string for it when it gives one. A required internal module the build does not have
    stops the build naming it; an optional one is left out (`scons map` says so)."""
    # A revision newer than highboot keeps: booted with the newest it keeps, the tag left unacknowledged
    # (its last word unchanged), as the protocol tells a loader to; the kernel decides what to do.
    revision = min(marks.base_revision, SUPPORTED_REVISION)
    blob = _Blob()
    answers: list[Answer] = []
    fills: list[tuple[str, int]] = []
    unanswered: list[tuple[str, str]] = []
    if marks.base_revision > SUPPORTED_REVISION:
        unanswered.append(("base revision", f"the kernel asks for revision {marks.base_revision}, newer than highboot "
                                            f"keeps: booted with revision {revision}, the tag left unacknowledged "
                                            "(LIMINE_BASE_REVISION_SUPPORTED is false for the kernel)"))
    stack_size, entry = MIN_STACK, None
    la57_at_boot = la57_required = False
    mode = spec.PAGING_MODE_5LVL if levels == 5 else spec.PAGING_MODE_4LVL
    if levels == 5 and marks.request("paging_mode") is None:
        # A kernel that does not ask gets 4-level paging from a Limine loader (and may build its
        # own 4-level tables: CR4.LA57 cannot change in long mode).
        raise HighbootError("the kernel has no paging mode request: a Limine loader gives it 4-level paging; the "
                            "layout gives 5-level paging (use a 4-level layout, or add a paging mode request "
                            "asking for 5-level paging to the kernel)", file=kernel.path, field="Limine requests")

    def refuse(message: str, at: int) -> HighbootError:
        return HighbootError(message, file=kernel.path, field=f"Limine request at {hex_addr(at)}")

    for req in marks.requests:
        known = req.known
        if known is None:
            unanswered.append((req.name, "an ID the protocol does not define: its response stays NULL"))
            continue
        if known.name not in BUILD + BOOT:
            unanswered.append((known.name, WHY_NOT.get(known.name, "not on x86-64 UEFI") + ": its response stays NULL"))
            continue
        response = blob.add(known.response.size)
        # Every response starts with its revision; highboot gives the ones it fills completely.
        # Revision 1 of the module response: the kernel's internal modules are honoured.
        response_revision = {"framebuffer": 1, "module": 1}.get(known.name, 0)
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
            # Whole pages: every CPU's stack is this size, and the stacks are mapped page by page.
            stack_size = max(MIN_STACK, align_up(req.field("stack_size"), PAGE))
        elif name == "paging_mode":
            la57_at_boot, la57_required = _paging_mode(req, levels, refuse)
            blob.put(response, known.response, mode=mode)
            if la57_at_boot:
                fills.append(("paging_mode", response))
        elif name == "entry_point":
            entry = req.field("entry")
            if not any(s.flags & SegmentFlags.EXECUTE and s.vaddr <= entry < s.end for s in kernel.segments):
                raise refuse(f"the entry point request's entry {hex_addr(entry)} is not in an executable segment",
                             req.vaddr)
        elif name == "executable_file":
            file = _file(blob, kernel_esp_path, cmdline, kernel.size)
            blob.pointer(response + r["executable_file"], file)
            fills.append(("executable_file", file))
        elif name == "entropy":
            count = min(req.field("value_count"), MAX_ENTROPY)
            blob.put(response, known.response, value_count=count)
            if count:
                array = blob.add(8 * count)
                blob.pointer(response + r["values"], array)
                fills.append(("entropy", array))
            fills.append(("entropy.count", count))
        elif name == "module":
            listed = _module_order(marks, modules, kernel.path, req.vaddr, unanswered)
            if not listed:
                unanswered.append((name, "no modules: its response stays NULL"))
                blob.data = blob.data[:response]
                continue
            array = blob.add(8 * len(listed))
            blob.put(response, known.response, module_count=len(listed))
            blob.pointer(response + r["modules"], array)
            # A module's path is its name, as a Limine loader resolves a module's path: from the
            # volume's root when it starts with "/", else from the kernel's directory.
            home = "/" + kernel_esp_path.replace("\\", "/").strip("/").rpartition("/")[0]
            for k, (n, string) in enumerate(listed):
                _, _, size, name = modules[n]
                path = name if name.startswith("/") else f"{home.rstrip('/')}/{_bare(name)}"
                file = _file(blob, path, string, size)
                blob.pointer(array + 8 * k, file)
                fills.append((f"module.{n}", file))
        else:
            fills.append((name, response))
        answers.append(Answer(name, req.vaddr, response, name if name in IF_PRESENT else ""))
    whys = dict(unanswered)
    decided_at_boot = {"paging_mode": "5-level paging on a CPU with LA57, " + (
        "else refused (the kernel asks for 5-level only)" if la57_required else "else 4-level")} if la57_at_boot else {}
    listed = tuple(ListedRequest(r.name, r.id, r.revision, r.vaddr, _how(r.name, whys, decided_at_boot))
                   for r in marks.requests)
    return LimineHandover(
        base_revision=marks.base_revision, revision=revision, tag_va=marks.tag_vaddr,
        supported=marks.base_revision <= SUPPORTED_REVISION, blob=blob.data.hex(), fixups=tuple(blob.fixups),
        answers=tuple(answers), fills=tuple(fills), stack_size=stack_size, entry=entry, paging_mode=mode,
        la57_at_boot=la57_at_boot, la57_required=la57_required,
        x2apic=bool((mp := marks.request("mp")) and mp.field("flags") & spec.MP_X2APIC),
        unanswered=tuple(unanswered), requests=listed)


_MODE_NAMES = {spec.PAGING_MODE_4LVL: "4-level", spec.PAGING_MODE_5LVL: "5-level"}


def _paging_mode(req: FoundRequest, levels: int, refuse: Callable[[str, int], HighbootError]) -> tuple[bool, bool]:
    """The paging mode request against the layout's depth: (la57_at_boot, la57_required), as
    LimineHandover says. A Limine loader gives the preferred mode (clamped to min..max) when the CPU has
    it, else the next one within min..max. A 5-level layout gives 5-level paging; a 4-level layout
    gives 4-level paging, or 5-level over the same tables when the kernel prefers it (or allows only
    it) and the CPU has LA57."""
    low = req.field("min_mode") if req.revision >= 1 else spec.PAGING_MODE_4LVL
    high = req.field("max_mode") if req.revision >= 1 else req.field("mode")
    five = spec.PAGING_MODE_5LVL
    if levels == 5 or not low <= five <= high:
        mode = five if levels == 5 else spec.PAGING_MODE_4LVL
        if not low <= mode <= high:
            hint = ("choose a 4-level layout: LAYOUT=templates/layouts/linux-x86_64.toml" if levels == 5 else
                    "x86-64 has modes 0, 4-level, and 1, 5-level")
            raise refuse(f"the kernel asks for {_MODE_NAMES.get(low, low)} to {_MODE_NAMES.get(high, high)} paging; "
                         f"the layout gives {levels}-level paging ({hint})", req.vaddr)
        return False, False
    four_allowed = low <= spec.PAGING_MODE_4LVL
    # (As Limine: the mode first clamped to what x86-64 has, then to min..max.)
    preferred = min(max(min(req.field("mode"), five), low), high)
    return preferred == five or not four_allowed, not four_allowed


def _how(name: str, unanswered: dict[str, str], decided_at_boot: dict[str, str]) -> str:
    """How highboot answers a request, in words (`decided_at_boot`: a build-time answer the boot
    changes, and how)."""
    if name in decided_at_boot:
        return f"at boot: {decided_at_boot[name]}"
    if name in unanswered:
        return f"not answered: {unanswered[name]}"
    if name in BUILD:
        return "at build time"
    return "at boot, when the machine has one" if name in IF_PRESENT else "at boot"


def _module_order(marks: LimineKernel, modules: tuple[tuple[str, str, int, str], ...], kernel: str, request: int,
                  unanswered: list[tuple[str, str]]) -> list[tuple[int, str]]:
    """The module response's list: (index in the build's modules, string): the kernel's internal
    modules the build has, first, then the build's other modules."""
    bare = _bare
    by_name = {}
    for n, (_, _, _, name) in enumerate(modules):
        by_name.setdefault(bare(name), n)
    listed: list[tuple[int, str]] = []
    for m in marks.internal_modules:
        n = by_name.get(bare(m.path))
        if n is None:
            if m.required:
                raise HighbootError(f"the kernel requires the internal module {m.path!r}; the build has no module "
                                    f"named so (add a [[module]] with name = {bare(m.path)!r} to the project file, "
                                    f"or MODULES=<file> with that file name)", file=kernel,
                                    field=f"Limine request at {hex_addr(request)}")
            unanswered.append((f"internal module {m.path}", "optional, and the build has no module named so: left "
                                                             "out"))
        elif all(n != k for k, _ in listed):
            listed.append((n, m.string or modules[n][1]))
    listed += [(n, module[1]) for n, module in enumerate(modules) if all(n != k for k, _ in listed)]
    return listed


def _bare(name: str) -> str:
    """A module name without a leading "./" or "/"."""
    return name[2:] if name.startswith("./") else name.lstrip("/")


def _file(blob: _Blob, path_text: str, string: str, size: int) -> int:
    """A struct limine_file for a file the loader reads (its address filled at boot), with this path."""
    path = blob.string("/" + path_text.replace("\\", "/").lstrip("/"))
    text = blob.string(string)
    at = blob.add(spec.FILE.size)
    o = spec.FILE.offsets()
    blob.put(at, spec.FILE, size=size, media_type=spec.MEDIA_TYPE_GENERIC)
    blob.pointer(at + o["path"], path)
    blob.pointer(at + o["string"], text)
    return at
