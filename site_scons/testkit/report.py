"""The serial report: the lines a sample kernel (Rust or C) prints on COM1 for the tests, and the
code it ends the boot with, described once.

A boot's report is lines of text. A line starts with a tag; the tags below are the protocol and
every other line (the firmware's, the loader's, a kernel's prose) is not part of it and is ignored.

``INFO key=value key=value ...``
    Facts, one or more per line, separated by one space. Each key below has a format; a key not
    described here is kept as text (tools print their own figures this way).
``MEM base length type``
    One memory-map entry of the boot info (base and length hex, type decimal: HIGHBOOT_MEM_*).
``MAP va pa size access``
    One coalesced mapping of the kernel's own walk of CR3 (hex, hex, hex, access text).
``EFI phys virt length access cache``
    One EFI runtime mapping the boot info lists (hex, hex, hex, access text, cache text).
``MODULE index phys virt size fnv name cmdline digest pattern``
    One module of the boot info: its place, size, the FNV-1a (64-bit) of the bytes the kernel
    sees, its name, command line and digest as bytes, and whether it matched its test pattern.
``CPU index processor_id apic_id stack_top state``
    One CPU record of the boot info, after the kernel released it: ``bsp`` for the first, ``ok``
    for an AP that ran the kernel's checks on itself and checked in, ``bad`` for one that did not.

Field formats:

- ``hex``: ``0x`` and 1 to 16 lowercase hex digits (Rust ``{:#x}``; ``{:#018x}`` pads to 16);
- ``decimal``: decimal digits (Rust ``{}``);
- ``hexbytes``: bytes as lowercase hex pairs, ``-`` for none (the command line's bytes);
- ``token``: any text without spaces or quotes (``1280x800``, a time stamp);
- ``choice``: one word of a fixed set (access text R, RW, RX, RWX; cache text WB, UC);
- ``quoted``: ``"`` text without ``"`` ``"`` (a kernel prints ``<not UTF-8>`` for bytes that are not text).

Rendered from this description, for test kernels only (testkit.tool wires the renders; the
product's protocol files, bootinfo.rs and highboot.h, carry none of it): report.rs
(templates/test/report.rs.j2), which the sample kernel includes, has the macros
``report_format!(MEM)`` (a line's format string) and ``info_format!(key, key, ...)`` (an INFO line
of these keys), so a kernel cannot print a key or a format this file does not describe;
highboot_report.h (templates/test/highboot_report.h.j2) has ``HIGHBOOT_REPORT_<TAG>`` and
``HIGHBOOT_INFO_<KEY>`` (the text before the value: ``"key=0x"`` for a hex key) for C kernels.
bootcheck.parse_report reads a report with this description and refuses a malformed line of a known
tag (wrong field count, a bad number, an unknown access text) naming the line.

A test kernel ends its boot by printing PASS_LINE (or a failure) and writing EXIT_PASS or EXIT_FAIL
(32 bits) to QEMU's isa-debug-exit device, whose port is the product's
(highboot.booting.qemu.DEBUG_EXIT_PORT); QEMU then exits with PASS_STATUS or FAIL_STATUS. report.rs
has them as ``report::EXIT_PORT`` and ``report::Exit``, highboot_report.h as ``HIGHBOOT_EXIT_*``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from highboot.booting.qemu import DEBUG_EXIT_PORT, debug_exit_status

#: Each format: the Rust format spec, the text a C kernel prints before the value, the pattern.
FORMATS = {
    "hex": ("{:#x}", "0x", r"0x[0-9a-f]{1,16}"),
    "decimal": ("{}", "", r"[0-9]+"),
    "hexbytes": ("{}", "", r"-|(?:[0-9a-f]{2})+"),
    "token": ("{}", "", r"[^\s\"]+"),
    "quoted": ('"{}"', '"', r'"[^"]*"'),
}
CHOICE = "choice"


@dataclass(frozen=True)
class Words:
    """The fixed words of a choice field, rendered as an array a kernel indexes."""

    name: str
    choices: tuple[str, ...]
    doc: str
    index_doc: str


ACCESS = Words("access", ("R", "RW", "RX", "RWX"), "rights of a mapping", "index writable | executable << 1")
CACHE = Words("cache", ("WB", "UC"), "caching of a mapping", "index 1 when uncached (memory-mapped I/O)")
PATTERN = Words("pattern", ("none", "ok", "bad"), "a module's test-pattern check",
                "index 0 when its command line names no pattern, else 1 + (a byte differs)")
ACCESS_TEXT, CACHE_TEXT, PATTERN_TEXT = ACCESS.choices, CACHE.choices, PATTERN.choices


@dataclass(frozen=True)
class ReportField:
    """One value of a line (or of an INFO key): its name, its format, and for a choice the words."""

    name: str
    format: str
    doc: str
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.format in FORMATS or (self.format == CHOICE and self.choices), self

    @property
    def rust(self) -> str:
        """The Rust format spec that prints this value."""
        return "{}" if self.format == CHOICE else FORMATS[self.format][0]

    @property
    def c_prefix(self) -> str:
        """What a C kernel prints before the value itself."""
        return "" if self.format == CHOICE else FORMATS[self.format][1]

    def matches(self, text: str) -> bool:
        if self.format == CHOICE:
            return text in self.choices
        return re.fullmatch(FORMATS[self.format][2], text) is not None


@dataclass(frozen=True)
class LineKind:
    """A line of a fixed shape: tag, then its fields separated by one space."""

    tag: str
    fields: tuple[ReportField, ...]
    doc: str

    @property
    def rust(self) -> str:
        """The line's Rust format string."""
        return " ".join([self.tag, *(f.rust for f in self.fields)])


def _hex(name: str, doc: str) -> ReportField:
    return ReportField(name, "hex", doc)


def _dec(name: str, doc: str) -> ReportField:
    return ReportField(name, "decimal", doc)


INFO_TAG = "INFO"
MEM = LineKind("MEM", (_hex("base", "physical start"), _hex("length", "bytes"),
                       _dec("type", "HIGHBOOT_MEM_* type")), "a memory-map entry of the boot info")
MAP = LineKind("MAP", (ReportField("va", "hex", "virtual start"),
                       ReportField("pa", "hex", "physical start"), _hex("size", "bytes"),
                       ReportField("access", CHOICE, "the walk's rights (W and X over every level)", ACCESS_TEXT)),
               "a coalesced mapping of the kernel's walk of its live page tables")
EFI = LineKind("EFI", (_hex("phys", "physical start"), _hex("virt", "address in the EFI region"),
                       _hex("length", "bytes"),
                       ReportField("access", CHOICE, "the rights it is mapped with", ACCESS_TEXT),
                       ReportField("cache", CHOICE, "UC: uncached (memory-mapped I/O), else WB", CACHE_TEXT)),
               "an EFI runtime mapping of the boot info's efi_runtime_map")
MODULE = LineKind("MODULE", (_dec("index", "its place in the boot info's list"), _hex("phys", "physical address"),
                             _hex("virt", "address in the direct map"), _hex("size", "bytes"),
                             _hex("fnv", "FNV-1a (64-bit) of the module's bytes as the kernel reads them"),
                             ReportField("name", "hexbytes", "the name's bytes"),
                             ReportField("cmdline", "hexbytes", "the command line's bytes"),
                             ReportField("digest", "hexbytes", "the digest the loader verified"),
                             ReportField("pattern", CHOICE, "ok / bad: checked against the test pattern its "
                                         "command line names (pattern=N); none: it names none", PATTERN_TEXT)),
                  "a module of the boot info, as the kernel sees it")
CPU_STATE = Words("cpu_state", ("bsp", "ok", "bad"), "a CPU record's state after the kernel released the APs",
                  "0: the BSP; 1: the AP checked in with every check passed; 2: it did not")
CPU = LineKind("CPU", (_dec("index", "its place in the boot info's cpus"), _dec("processor_id", "ACPI processor UID"),
                       _hex("apic_id", "(x2)APIC ID"), _hex("stack_top", "stack_top"),
                       ReportField("state", CHOICE, "bsp, or how the released AP fared", CPU_STATE.choices)),
               "a CPU of the boot info, as the kernel found it")
LINES = (MEM, MAP, EFI, MODULE, CPU)

#: Every INFO key a kernel prints and the tests (or tools) read.
INFO_KEYS = (
    _dec("tsc_kernel", "TSC at the kernel's entry"),
    _hex("entry_rsp", "RSP at the entry (stack_top - 8)"),
    _hex("block", "kernel_phys_base: the block the kernel owns"),
    _hex("block_size", "kernel_phys_size"),
    _hex("direct_map_base", "direct_map_base"),
    _hex("direct_map_size", "direct_map_size"),
    _hex("direct_map_page", "direct_map_page_size"),
    _hex("trampoline_phys", "trampoline_phys"),
    _hex("trampoline_virt", "trampoline_virt"),
    _hex("identity_tables_phys", "identity_tables_phys"),
    _dec("identity_tables_pages", "identity_tables_pages"),
    _hex("root", "CR3 (page_table_root)"),
    _dec("tables", "page_tables_pages"),
    _hex("features", "cpu_features"),
    _hex("flags", "flags"),
    _hex("framebuffer", "framebuffer_phys (0x0: none)"),
    _hex("fb_size", "framebuffer_size"),
    ReportField("fb", "token", "framebuffer width x height"),
    _dec("stride", "framebuffer_stride"),
    _dec("format", "framebuffer_format (HIGHBOOT_FB_*)"),
    _hex("fb_red_mask", "framebuffer_red_mask"),
    _hex("fb_green_mask", "framebuffer_green_mask"),
    _hex("fb_blue_mask", "framebuffer_blue_mask"),
    _hex("fb_reserved_mask", "framebuffer_reserved_mask"),
    _hex("rsdp", "rsdp"),
    _dec("rsdp_revision", "rsdp_revision"),
    _hex("system_table", "efi_system_table"),
    _dec("tsc_loader_entry", "tsc_loader_entry"),
    _dec("tsc_handoff", "tsc_handoff"),
    ReportField("cmdline", "quoted", "the command line as text (<not UTF-8> when it is not)"),
    ReportField("cmdline_hex", "hexbytes", "the command line's bytes"),
    _dec("levels", "paging levels the kernel runs with (CR4.LA57)"),
    _hex("kernel_slide", "kernel_slide"),
    _hex("direct_map_slide", "direct_map_slide"),
    _hex("link_base", "where the kernel is linked"),
    _hex("running_at", "where the kernel found itself running"),
    _hex("usable", "bytes of usable memory in the map"),
    _dec("map_ranges", "number of MAP lines"),
    ReportField("efi", CHOICE, "present only when the layout has no EFI region", ("none",)),
    ReportField("efi_time", "token", "GetTime through the virtual runtime services (ISO 8601)"),
    _dec("efi_year", "its year"),
    ReportField("shape", CHOICE, "how the kernel is linked: its own-image checks ran for toolchain",
                ("toolchain", "exec", "script")),
    _hex("image", "the kernel's ELF header in memory (__ehdr_start)"),
    _hex("kernel_load_bias", "kernel_load_bias"),
    _hex("eh_frame_hdr", "eh_frame_hdr"),
    _hex("eh_frame_hdr_size", "eh_frame_hdr_size"),
    _hex("tls_template", "tls_template"),
    _hex("tls_mem_size", "tls_mem_size"),
    _hex("relro", "PT_GNU_RELRO start, placed"),
    _hex("relro_size", "its size"),
    _dec("relro_pages", "pages of RELRO the kernel found read-only in its live tables"),
    _dec("modules", "module_count (a MODULE line follows for each)"),
    _hex("kernel_file_phys", "kernel_file_phys (0x0: not handed over)"),
    _hex("kernel_file_size", "kernel_file_size"),
    _dec("kernel_file_segments_compared", "read-only PT_LOAD segments of the kernel file found equal to the running "
         "kernel's"),
    _dec("cpu_count", "cpu_count (a CPU line follows for each)"),
    _hex("bsp_apic_id", "bsp_apic_id"),
    _hex("cpu_flags", "cpu_flags"),
    _dec("cpus_failed", "cpus_failed"),
    _dec("cpus_not_started", "cpus_not_started"),
    _hex("ap_stack_size", "ap_stack_size"),
    _dec("aps_released", "APs the kernel released that checked in with every check passed"),
    _dec("aps_self_started", "SMP off: APs the kernel itself started with INIT-SIPI-SIPI that reported in"),
)
INFO = {f.name: f for f in INFO_KEYS}
assert len(INFO) == len(INFO_KEYS)

#: The codes a test kernel writes to the isa-debug-exit port (the product's): every check passed, or
#: not; QEMU's exit status after each; the line a kernel prints when every check passed.
EXIT_PORT = DEBUG_EXIT_PORT
EXIT_PASS = 0x10
EXIT_FAIL = 0x11
PASS_STATUS = debug_exit_status(EXIT_PASS)
FAIL_STATUS = debug_exit_status(EXIT_FAIL)
PASS_LINE = "HIGHBOOT-KERNEL: PASS"


def context() -> dict[str, object]:
    """What the report's rendered views (report.rs, highboot_report.h) render from."""
    return {"report_lines": LINES, "report_info_tag": INFO_TAG, "report_info_keys": INFO_KEYS,
            "report_choices": (ACCESS, CACHE, PATTERN, CPU_STATE),
            "report_exit": {"port": EXIT_PORT, "pass": EXIT_PASS, "fail": EXIT_FAIL}}
