"""Named checks of the loader's PE/COFF image, run as a build step: a failed check fails the build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pefile

from highboot.errors import HighbootError

IMAGE_FILE_MACHINE_AMD64 = 0x8664
IMAGE_SUBSYSTEM_EFI_APPLICATION = 10
IMAGE_DLLCHARACTERISTICS_NX_COMPAT = 0x0100
IMAGE_SCN_MEM_EXECUTE = 0x20000000
IMAGE_SCN_MEM_WRITE = 0x80000000
IMAGE_DIRECTORY_ENTRY_BASERELOC = 5
PE32_PLUS = 0x20B


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def check_pe(path: str | Path) -> list[CheckResult]:
    try:
        pe = pefile.PE(str(path), fast_load=True)
    except (pefile.PEFormatError, OSError) as exc:
        raise HighbootError(f"not a readable PE/COFF image: {exc}", file=path) from None
    try:
        return _checks(pe)
    finally:
        pe.close()


def _section_name(section: pefile.SectionStructure) -> str:
    return section.Name.rstrip(b"\0").decode("ascii", "replace")


def _checks(pe: pefile.PE) -> list[CheckResult]:
    fh, oh = pe.FILE_HEADER, pe.OPTIONAL_HEADER
    results = [
        CheckResult("machine AMD64", fh.Machine == IMAGE_FILE_MACHINE_AMD64, f"Machine {fh.Machine:#x}"),
        CheckResult("PE32+", oh.Magic == PE32_PLUS, f"Magic {oh.Magic:#x}"),
        CheckResult("subsystem EFI application", oh.Subsystem == IMAGE_SUBSYSTEM_EFI_APPLICATION,
                    f"Subsystem {oh.Subsystem}"),
        CheckResult("SectionAlignment 4096", oh.SectionAlignment == 4096, f"SectionAlignment {oh.SectionAlignment:#x}"),
        CheckResult("NX_COMPAT", bool(oh.DllCharacteristics & IMAGE_DLLCHARACTERISTICS_NX_COMPAT),
                    f"DllCharacteristics {oh.DllCharacteristics:#x}"),
    ]
    wx = [_section_name(s) for s in pe.sections
          if s.Characteristics & IMAGE_SCN_MEM_WRITE and s.Characteristics & IMAGE_SCN_MEM_EXECUTE]
    results.append(CheckResult("no section both writable and executable", not wx,
                               f"W+X sections: {', '.join(wx)}" if wx else f"{len(pe.sections)} sections"))
    reloc = oh.DATA_DIRECTORY[IMAGE_DIRECTORY_ENTRY_BASERELOC] if len(oh.DATA_DIRECTORY) > 5 else None
    has_reloc = reloc is not None and reloc.Size > 0
    results.append(CheckResult("relocations present", has_reloc,
                               f"base relocation directory {reloc.Size if reloc else 0} bytes"))
    entry = oh.AddressOfEntryPoint
    holder = next((s for s in pe.sections
                   if s.VirtualAddress <= entry < s.VirtualAddress + max(s.Misc_VirtualSize, s.SizeOfRawData)), None)
    ok = holder is not None and bool(holder.Characteristics & IMAGE_SCN_MEM_EXECUTE)
    where = _section_name(holder) if holder is not None else "no section"
    results.append(CheckResult("entry point in an executable section", ok, f"entry {entry:#x} in {where}"))
    return results


def require_valid(path: str | Path) -> list[CheckResult]:
    results = check_pe(path)
    failed = [r for r in results if not r.ok]
    if failed:
        raise HighbootError("PE check failed: " + "; ".join(f"{r.name} ({r.detail})" for r in failed), file=path)
    return results
