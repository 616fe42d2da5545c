"""The Limine boot protocol (x86-64, UEFI), described once: request IDs, the structures of requests
and responses, memory-map types, base revisions and what each one promises.

Facts and numbers come from the protocol's specification (Limine 8.x's PROTOCOL.md for base
revisions 0-2, limine-protocol's PROTOCOL.md for the newer ones); the layouts are our own
description of them. Rendered to the loader's Rust (templates/loader/limine.rs.j2) and to a C
header for highboot's own Limine test kernel (templates/include/highboot-limine.h.j2); scanned for
at build time (scan.py).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The first two words of every request's ID.
COMMON_MAGIC = (0xC7B1DD30DF4C8B88, 0x0A82E883A194F07B)
#: The base revision tag: these two words, then the revision the kernel asks for.
BASE_REVISION_MAGIC = (0xF9562B2D5C95A6C8, 0x6A7B384944536BDC)
#: Requests are looked for after the last start marker and before the first end marker.
REQUESTS_START_MARKER = (0xF6B8F4B39DE7D1AE, 0xFAB91A6940FCB9CF, 0x785C6ED015D3E316, 0x181E920A7852B9D9)
REQUESTS_END_MARKER = (0xADC0E0531BB10D03, 0x9572709F31764C62)
#: Limine collects at most this many requests.
MAX_REQUESTS = 128

#: Field types: name -> (size, alignment, C type).
TYPES = {
    "u8": (1, 1, "uint8_t"), "u16": (2, 2, "uint16_t"), "u32": (4, 4, "uint32_t"), "u64": (8, 8, "uint64_t"),
    "i64": (8, 8, "int64_t"), "ptr": (8, 8, "uint64_t"),
}


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # a key of TYPES, or "u8[N]"
    doc: str = ""

    @property
    def count(self) -> int:
        return int(self.type[3:-1]) if self.type.startswith("u8[") else 1

    @property
    def size(self) -> int:
        return self.count if self.type.startswith("u8[") else TYPES[self.type][0]

    @property
    def align(self) -> int:
        return 1 if self.type.startswith("u8[") else TYPES[self.type][1]


@dataclass(frozen=True)
class Struct:
    """A repr(C) structure of the protocol."""

    name: str  # C name without the limine_ prefix
    fields: tuple[Field, ...]
    doc: str = ""

    def offsets(self) -> dict[str, int]:
        out, at = {}, 0
        for f in self.fields:
            at = (at + f.align - 1) // f.align * f.align
            out[f.name] = at
            at += f.size
        return out

    @property
    def size(self) -> int:
        end = max(o + f.size for f, o in zip(self.fields, self.offsets().values(), strict=True))
        align = max(f.align for f in self.fields)
        return (end + align - 1) // align * align


def _s(name: str, doc: str, *fields: tuple[str, str] | tuple[str, str, str]) -> Struct:
    return Struct(name, tuple(Field(*f) for f in fields), doc)


#: Every request starts with these.
REQUEST_HEADER = (("id_0", "u64"), ("id_1", "u64"), ("id_2", "u64"), ("id_3", "u64"), ("revision", "u64"),
                  ("response", "ptr", "written by the loader: the response's address, or left as it was (NULL)"))
REQUEST_RESPONSE_OFFSET = 40


@dataclass(frozen=True)
class Request:
    """One request of the protocol: its ID (the two words after the common magic), the request's
    extra fields (after the 48-byte header) and the response's layout."""

    name: str
    id: tuple[int, int]
    extra: tuple[Field, ...]  # request fields after the header, for the request revision that has them
    response: Struct
    doc: str
    #: The request revision from which each extra field exists (default 0).
    since: tuple[tuple[str, int], ...] = ()
    #: How highboot answers: "build" (planned), "boot" (filled at boot), or "" (never: NULL response).
    answered: str = "boot"

    @property
    def request(self) -> Struct:
        return Struct(f"{self.name}_request", tuple(Field(*f) for f in REQUEST_HEADER) + self.extra)

    def size_for(self, revision: int) -> int:
        """Bytes of the request a kernel of this request revision declares."""
        since = dict(self.since)
        fields = tuple(Field(*f) for f in REQUEST_HEADER) + tuple(f for f in self.extra if since.get(f.name, 0)
                                                                  <= revision)
        return Struct(self.name, fields).size


def _r(name: str, id2: int, id3: int, doc: str, response: tuple, extra: tuple = (), since: tuple = (),
       answered: str = "boot") -> Request:
    return Request(name, (id2, id3), tuple(Field(*f) for f in extra),
                   _s(f"{name}_response", doc, ("revision", "u64"), *response), doc, since, answered)


REQUESTS = (
    _r("bootloader_info", 0xF55038D8E2A1202F, 0x279426FCF5F59740, "the loader's name and version",
       (("name", "ptr"), ("version", "ptr")), answered="build"),
    _r("executable_cmdline", 0x4B161536E598651E, 0xB390AD4A2F1F303A, "the executable's command line",
       (("cmdline", "ptr"),), answered="build"),
    _r("firmware_type", 0x8C2F75D90BEF28A8, 0x7045A4688EAC00C3, "the firmware: 2, 64-bit UEFI",
       (("firmware_type", "u64"),), answered="build"),
    _r("stack_size", 0x224EF0460A8E8926, 0xE1CB0FC25F46EA3D, "the stack size the kernel asks for",
       (), extra=(("stack_size", "u64"),), answered="build"),
    _r("hhdm", 0x48DCF1CB8AD2B852, 0x63984E959A98244B, "the higher-half direct map's offset",
       (("offset", "u64"),)),
    _r("framebuffer", 0x9D5827DCD881DD75, 0xA3148604F6FAB11B, "the framebuffers",
       (("framebuffer_count", "u64"), ("framebuffers", "ptr"))),
    _r("paging_mode", 0x95C1A0EDAB0944CB, 0xA4E5CB3842F7488A, "the paging mode the loader enabled",
       (("mode", "u64"),), extra=(("mode", "u64"), ("max_mode", "u64"), ("min_mode", "u64")),
       since=(("max_mode", 1), ("min_mode", 1)), answered="build"),
    _r("mp", 0x95A67B819A1B857E, 0xA0B61B723B6A73E0, "the processors, the APs parked",
       (("flags", "u32"), ("bsp_lapic_id", "u32"), ("cpu_count", "u64"), ("cpus", "ptr")),
       extra=(("flags", "u64"),)),
    _r("riscv_bsp_hartid", 0x1369359F025525F9, 0x2FF2A56178391BB6, "RISC-V only: no response on x86-64",
       (("bsp_hartid", "u64"),), answered=""),
    _r("memmap", 0x67CF3D9D378A806F, 0xE304ACDFC50C3C62, "the memory map",
       (("entry_count", "u64"), ("entries", "ptr"))),
    _r("entry_point", 0x13D86C035A1CD3E1, 0x2B0CAA89D8F3026A, "the entry point the kernel asks for",
       (), extra=(("entry", "ptr"),), answered="build"),
    _r("executable_file", 0xAD97E90E83F1ED67, 0x31EB5D1C5FF23B69, "the executable's file",
       (("executable_file", "ptr"),)),
    _r("module", 0x3E7E279702BE32AF, 0xCA1C4F3BD1280CEE, "the modules",
       (("module_count", "u64"), ("modules", "ptr")),
       extra=(("internal_module_count", "u64"), ("internal_modules", "ptr")),
       since=(("internal_module_count", 1), ("internal_modules", 1))),
    _r("rsdp", 0xC5E77B6B397E7B43, 0x27637845ACCDCF3C, "the ACPI RSDP", (("address", "u64"),)),
    _r("smbios", 0x9E9046F11E095391, 0xAA4A520FEFBDE5EE, "the SMBIOS entry points",
       (("entry_32", "u64"), ("entry_64", "u64"))),
    _r("efi_system_table", 0x5CEBA5163EAAF6D6, 0x0A6981610CF65FCC, "the EFI system table", (("address", "u64"),)),
    _r("efi_memmap", 0x7DF62A431D6872D5, 0xA4FCDFB3E57306C8, "the EFI memory map of ExitBootServices",
       (("memmap", "ptr"), ("memmap_size", "u64"), ("desc_size", "u64"), ("desc_version", "u64"))),
    _r("date_at_boot", 0x502746E184C088AA, 0xFBC5EC83E6327893, "the time at boot (UNIX seconds)",
       (("timestamp", "i64"),)),
    _r("executable_address", 0x71BA76863CC55F63, 0xB2644A48C516A487, "where the executable is loaded",
       (("physical_base", "u64"), ("virtual_base", "u64"))),
    _r("dtb", 0xB40DDB48FB54BAC7, 0x545081493F81FFB7, "a device tree: none on ACPI machines",
       (("dtb_ptr", "ptr"),), answered=""),
    _r("bootloader_performance", 0x6B50AD9BF36D13AD, 0xDC4C7E88FC759E17, "the loader's timings (microseconds)",
       (("reset_usec", "u64"), ("init_usec", "u64"), ("exec_usec", "u64"))),
    _r("keep_iommu", 0x8EBAABE51F490179, 0x2AA86A59FFB4AB0F, "leave the IOMMUs as the firmware left them",
       (), answered="build"),
    _r("tsc_frequency", 0x10F2EE1D87D195E4, 0xF747A2B78F6DDB31, "the TSC's frequency (Hz)", (("frequency", "u64"),)),
    _r("entropy", 0x65EA80255D5682C5, 0x9117240723F493EB, "random words",
       (("value_count", "u64"), ("values", "ptr")), extra=(("value_count", "u64"),)),
    _r("tpm_event_log", 0x98E094FC7E76E979, 0xEE8D8775C54E1D1F, "the TPM event log",
       (("format", "u64"), ("size", "u64"), ("address", "u64")), answered=""),
    _r("flanterm_fb_init_params", 0x3259399FE7C5F126, 0xE01C1C8C5DB9D1A9, "a terminal's parameters",
       (("entry_count", "u64"), ("entries", "ptr")), answered=""),
    # Deprecated, answered by no current loader.
    _r("terminal", 0xC8AC59310C2B0844, 0xA68D0C7265D38878, "deprecated (no response)", (), answered=""),
    _r("five_level_paging", 0x94469551DA9B3192, 0xEBE5E86DB7382888, "deprecated: the paging mode request replaces "
       "it (no response)", (), answered=""),
)
BY_ID = {r.id: r for r in REQUESTS}
BY_NAME = {r.name: r for r in REQUESTS}

UUID = _s("uuid", "a GUID as EFI and GPT store it", ("a", "u32"), ("b", "u16"), ("c", "u16"), ("d", "u8[8]"))
FILE = _s("file", "a file the loader read",
          ("revision", "u64"), ("address", "ptr", "the contents (HHDM), 4 KiB aligned"), ("size", "u64"),
          ("path", "ptr", "its path on the volume, from /"), ("string", "ptr", "its string (command line)"),
          ("media_type", "u32"), ("unused", "u32"), ("tftp_ip", "u32"), ("tftp_port", "u32"),
          ("partition_index", "u32"), ("mbr_disk_id", "u32"),
          ("gpt_disk_uuid", "u8[16]"), ("gpt_part_uuid", "u8[16]"), ("part_uuid", "u8[16]"))
INTERNAL_MODULE = _s("internal_module", "a module the kernel names itself",
                     ("path", "ptr"), ("string", "ptr"), ("flags", "u64"))
FRAMEBUFFER = _s("framebuffer", "a linear framebuffer",
                 ("address", "ptr"), ("width", "u64"), ("height", "u64"), ("pitch", "u64"), ("bpp", "u16"),
                 ("memory_model", "u8"), ("red_mask_size", "u8"), ("red_mask_shift", "u8"),
                 ("green_mask_size", "u8"), ("green_mask_shift", "u8"), ("blue_mask_size", "u8"),
                 ("blue_mask_shift", "u8"), ("unused", "u8[7]"), ("edid_size", "u64"), ("edid", "ptr"),
                 ("mode_count", "u64"), ("modes", "ptr"))
VIDEO_MODE = _s("video_mode", "a mode the framebuffer can be set to",
                ("pitch", "u64"), ("width", "u64"), ("height", "u64"), ("bpp", "u16"), ("memory_model", "u8"),
                ("red_mask_size", "u8"), ("red_mask_shift", "u8"), ("green_mask_size", "u8"),
                ("green_mask_shift", "u8"), ("blue_mask_size", "u8"), ("blue_mask_shift", "u8"))
MP_INFO = _s("mp_info", "one processor",
             ("processor_id", "u32", "ACPI processor UID"), ("lapic_id", "u32"),
             ("reserved", "u64", "the loader's: the AP's stack top"), ("goto_address", "ptr"),
             ("extra_argument", "u64"))
MEMMAP_ENTRY = _s("memmap_entry", "one memory-map entry", ("base", "u64"), ("length", "u64"), ("type", "u64"))
STRUCTS = (UUID, FILE, INTERNAL_MODULE, FRAMEBUFFER, VIDEO_MODE, MP_INFO, MEMMAP_ENTRY)

#: Memory-map types.
MEMMAP_TYPES = {"USABLE": 0, "RESERVED": 1, "ACPI_RECLAIMABLE": 2, "ACPI_NVS": 3, "BAD_MEMORY": 4,
                "BOOTLOADER_RECLAIMABLE": 5, "EXECUTABLE_AND_MODULES": 6, "FRAMEBUFFER": 7, "RESERVED_MAPPED": 8}
FIRMWARE_TYPE_EFI64 = 2
FRAMEBUFFER_RGB = 1
PAGING_MODE_4LVL, PAGING_MODE_5LVL = 0, 1
MP_X2APIC = 1  # request flags and response flags, bit 0
INTERNAL_MODULE_REQUIRED, INTERNAL_MODULE_COMPRESSED = 1, 2
MEDIA_TYPE_GENERIC = 0

#: IA32_PAT at entry, on every CPU (x86-64): PA0 WB, PA1 WT, PA2 UC-, PA3 UC, PA4 WP, PA5 WC (the
#: framebuffer's); PA6 UC- and PA7 UC as after reset (the protocol leaves them open).
PAT_TYPES = (0x06, 0x04, 0x07, 0x00, 0x05, 0x01, 0x07, 0x00)
PAT = sum(memory_type << 8 * n for n, memory_type in enumerate(PAT_TYPES))


@dataclass(frozen=True)
class Revision:
    """What one base revision promises, where it differs from the others (x86-64)."""

    number: int
    identity_4gib: bool  # revision 0: the first 4 GiB identity-mapped
    hhdm_first_4gib: bool  # the HHDM maps 0..4 GiB whatever the map says (0-2)
    rsdp_physical: bool
    smbios_physical: bool
    efi_system_table_physical: bool
    markers_required: bool  # the markers must be honoured (2 on; earlier: hints)
    loaded_revision_word: bool  # the loader writes the revision it used into the tag's second word (3 on)
    #: Every ACPI table (RSDP, RSDT/XSDT, what they list, FACS, DSDT) in an ACPI or RESERVED_MAPPED memory-map
    #: entry, and those in the HHDM (4 on).
    acpi_tables_mapped: bool = False


REVISIONS = (
    Revision(0, True, True, False, False, False, False, False),
    Revision(1, False, True, False, False, False, False, False),
    Revision(2, False, True, False, False, False, True, False),
    Revision(3, False, False, True, True, True, True, True),
    Revision(4, False, False, False, True, True, True, True, acpi_tables_mapped=True),
    Revision(5, False, False, False, False, False, True, True, acpi_tables_mapped=True),
    Revision(6, False, False, False, False, False, True, True, acpi_tables_mapped=True),
)
