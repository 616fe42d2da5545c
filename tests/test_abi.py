"""One ABI, three views: what site_scons/highboot/rendering/loader_abi.py and bootinfo.py describe, rendered to Rust
(compiled for this machine and asked with offset_of!), C (gcc, offsetof) and assembly (assembled,
its symbols and bytes read back), must agree field by field. The tests' serial report (testkit/report.py)
too, in its own files: what report.rs's macros print, parse_report reads back; highboot_report.h's
macros are its words; the protocol's files (bootinfo.rs, highboot.h) carry none of it."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hostrust import assemble, rendered, run_rust
from testkit import report
from testkit.bootcheck import parse_report

from highboot.protocols import bootinfo
from highboot.rendering import cpu_bits
from highboot.rendering import loader_abi as abi

#: The tests' report, rendered for test kernels only.
REPORT_RS, REPORT_H = "test/report.rs.j2", "test/highboot_report.h.j2"


def test_the_protocol_files_carry_no_test_report() -> None:
    """bootinfo.rs and highboot.h hold the boot info ABI and nothing else (as limine.h holds its
    protocol): the report's macros, words and exit codes are only in the test kernels' files."""
    rust, header = rendered("common/bootinfo.rs.j2"), rendered("include/highboot.h.j2")
    for word in ("macro_rules!", "mod report", "EXIT_PORT", "enum Exit", "isa-debug-exit"):
        assert word not in rust, word
    for word in ("HIGHBOOT_REPORT", "HIGHBOOT_INFO_", "HIGHBOOT_EXIT", "isa-debug-exit"):
        assert word not in header, word
    test_rust, test_header = rendered(REPORT_RS, extra=report.context()), rendered(REPORT_H, extra=report.context())
    assert "macro_rules! info_format" in test_rust and "pub enum Exit" in test_rust
    assert "#define HIGHBOOT_EXIT_PASS" in test_header and "#define HIGHBOOT_INFO_BLOCK " in test_header


def python_offsets(fields: tuple[bootinfo.Field, ...]) -> list[int]:
    """Offsets of a repr(C) struct of u32/u64/u8[N] fields, computed here from the description."""
    out, at = [], 0
    for f in fields:
        if f.type.startswith("u8["):
            align, size = 1, int(f.type[3:-1])
        else:
            align = size = 8 if f.type == "u64" else 4
        at = (at + align - 1) // align * align
        out.append(at)
        at += size
    return out


def test_handoff_rust_and_assembly_agree(built: dict, tmp_path: Path) -> None:
    names = [w.name for w in abi.HANDOFF]
    rust = run_rust(tmp_path, {"abi": rendered("loader/abi.rs.j2")},
                    "\n".join(f'    println!("{{}}", core::mem::offset_of!(abi::Handoff, {n}));' for n in names)
                    + '\n    println!("{} {} {} {} {}", core::mem::size_of::<abi::Handoff>(), abi::TDATA_GDTR_BASE, '
                    "abi::TDATA_FAR32, abi::TDATA_FAR64, abi::TDATA_HANDOFF);"
                    + '\n    println!("{} {}", abi::DESC_GDTR, abi::DESC_SIZE);').split()
    assert [int(x) for x in rust] == [abi.handoff_offset(n) for n in names] + [
        8 * len(names), abi.TDATA_GDTR_BASE, abi.TDATA_FAR32, abi.TDATA_FAR64, abi.TDATA_HANDOFF,
        abi.DESC_GDTR, abi.DESC_SIZE]
    # Each register is 10 bytes (u16 limit, u64 base); both fit in DESC_SIZE without overlapping.
    assert abi.DESC_GDTR + 10 <= abi.DESC_IDTR and abi.DESC_IDTR + 10 <= abi.DESC_SIZE

    # The assembly: its symbols, and the trampoline data's bytes where the loader writes into them.
    with assemble(tmp_path, rendered("loader/trampoline.S.j2", built["plan"])).open("rb") as f:
        elf = ELFFile(f)
        symbols = {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols()}
        for n in names:
            assert symbols[f"HANDOFF_{n.upper()}"]["st_value"] == abi.handoff_offset(n), n
        assert symbols["HANDOFF_SIZE"]["st_value"] == 8 * len(names)
        assert (symbols["DESC_GDTR"]["st_value"], symbols["DESC_IDTR"]["st_value"]) == (abi.DESC_GDTR, abi.DESC_IDTR)
        data = symbols["highboot_trampoline_data"]
        text = elf.get_section(data["st_shndx"]).data()
        tdata = text[data["st_value"]:data["st_value"] + abi.TDATA_HANDOFF + 8 * len(names)]
    gdt = struct.unpack_from(f"<{len(abi.TDATA_GDT_ENTRIES)}Q", tdata, abi.TDATA_GDT)
    assert gdt == abi.TDATA_GDT_ENTRIES
    assert struct.unpack_from("<H", tdata, abi.TDATA_GDTR)[0] == 8 * len(abi.TDATA_GDT_ENTRIES) - 1
    assert abi.TDATA_GDTR_BASE == abi.TDATA_GDTR + 2  # the base follows the limit
    assert struct.unpack_from("<H", tdata, abi.TDATA_FAR32 + 4)[0] == abi.TDATA_CODE32_SELECTOR
    assert struct.unpack_from("<H", tdata, abi.TDATA_FAR64 + 4)[0] == abi.TDATA_CODE64_SELECTOR
    # The selectors name GDT entries of the right kind: 32-bit code (D=1, L=0), 64-bit code (L=1).
    assert gdt[abi.TDATA_CODE32_SELECTOR // 8] >> 53 & 3 == 0b10
    assert gdt[abi.TDATA_CODE64_SELECTOR // 8] >> 53 & 3 == 0b01


@pytest.mark.parametrize("struct_name, rust_name, fields", [
    ("highboot_boot_info", "BootInfo", bootinfo.BOOT_INFO),
    ("highboot_memory_region", "MemoryRegion", bootinfo.MEMORY_REGION),
    ("highboot_efi_range", "EfiRange", bootinfo.EFI_RANGE),
    ("highboot_module", "Module", bootinfo.MODULE),
])
def test_boot_info_rust_and_c_agree(tmp_path: Path, struct_name: str, rust_name: str,
                                    fields: tuple[bootinfo.Field, ...]) -> None:
    names = [("r#" if f.name in ("type",) else "") + f.name for f in fields]
    rust = run_rust(tmp_path, {"bootinfo": rendered("common/bootinfo.rs.j2")},
                    "\n".join(f'    println!("{{}}", core::mem::offset_of!(bootinfo::{rust_name}, {n}));'
                              for n in names)
                    + f'\n    println!("{{}}", core::mem::size_of::<bootinfo::{rust_name}>());').split()
    (tmp_path / "highboot.h").write_text(rendered("include/highboot.h.j2"))
    lines = "\n".join(f'    printf("%zu\\n", offsetof(struct {struct_name}, {f.name}));' for f in fields)
    (tmp_path / "c.c").write_text(f'#include <stddef.h>\n#include <stdio.h>\n#include "highboot.h"\nint main(void) {{\n'
                                  f'{lines}\n    printf("%zu\\n", sizeof(struct {struct_name}));\n    return 0;\n}}\n')
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(tmp_path / "c"), str(tmp_path / "c.c")], check=True,
                   timeout=120)
    c = subprocess.run([str(tmp_path / "c")], capture_output=True, text=True, check=True).stdout.split()
    expected = [*python_offsets(fields), bootinfo.size_of(fields)]
    assert [int(x) for x in rust] == expected
    assert [int(x) for x in c] == expected


def test_pte_bits_rust_and_c_agree_with_the_planner(tmp_path: Path) -> None:
    """The page-table bits the planner encodes are the ones loader, kernels and C see."""
    from highboot.planning.paging import ADDR_MASK, PageFlags

    expected = [int(PageFlags[c.name]) if c.name in PageFlags.__members__ else ADDR_MASK for c in bootinfo.PTE_BITS]
    names = [c.name for c in bootinfo.PTE_BITS]
    rust = run_rust(tmp_path, {"bootinfo": rendered("common/bootinfo.rs.j2")},
                    "\n".join(f'    println!("{{}}", bootinfo::pte::{n});' for n in names)).split()
    (tmp_path / "highboot.h").write_text(rendered("include/highboot.h.j2"))
    lines = "\n".join(f'    printf("%llu\\n", (unsigned long long)HIGHBOOT_PTE_{n});' for n in names)
    (tmp_path / "c.c").write_text(f'#include <stdio.h>\n#include "highboot.h"\nint main(void) {{\n{lines}\n'
                                  "    return 0;\n}\n")
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(tmp_path / "c"), str(tmp_path / "c.c")], check=True,
                   timeout=120)
    c = subprocess.run([str(tmp_path / "c")], capture_output=True, text=True, check=True).stdout.split()
    assert [int(x) for x in rust] == [int(x) for x in c] == expected
    assert "ADDR_MASK" in names and "NO_EXECUTE" in names and "HUGE_PAGE" in names


# ------------------------------------------------------------------ the serial report (report.py)

#: A value of each format, as the kernels pass it to the format string, and as it is printed.
SAMPLES = {"hex": ("0x1234_abcd_u64", "0x1234abcd"), "decimal": ("42_u64", "42"), "hexbytes": ('"00ff"', "00ff"),
           "token": ('"1280x800"', "1280x800"), "quoted": ('"a b=c"', "a b=c")}


def _sample(field: report.ReportField) -> tuple[str, str]:
    if field.format == report.CHOICE:
        return f'"{field.choices[-1]}"', field.choices[-1]
    return SAMPLES[field.format]


def test_report_rust_view_prints_what_parse_report_reads(tmp_path: Path) -> None:
    """Every line kind and every INFO key, printed through the rendered macros, reads back as the
    values given; the rendered words are the description's."""
    body = []
    for kind in report.LINES:
        args = ", ".join(_sample(f)[0] for f in kind.fields)
        body.append(f"    println!(report_format!({kind.tag}), {args});")
    keys = report.INFO_KEYS
    for i in range(0, len(keys), 5):  # several keys per line, as the kernels print them
        group = keys[i:i + 5]
        args = ", ".join(_sample(k)[0] for k in group)
        body.append(f"    println!(info_format!({', '.join(k.name for k in group)}), {args});")
    for words in report.context()["report_choices"]:
        body.append(f'    println!("WORDS {words.name} {{}}", report::{words.name.upper()}.join(" "));')
    out = run_rust(tmp_path, {"report": rendered(REPORT_RS, extra=report.context())}, "\n".join(body))
    parsed = parse_report(out)
    assert parsed.facts == {k.name: _sample(k)[1] for k in keys}
    assert parsed.memory == [(0x1234ABCD, 0x1234ABCD, 42)]
    assert len(parsed.mappings) == len(parsed.efi) == 1
    assert parsed.mappings[0].va == 0x1234ABCD and parsed.efi[0].pa == 0x1234ABCD
    assert len(parsed.modules) == 1
    module = parsed.modules[0]
    assert (module.index, module.phys, module.fnv, module.name, module.digest, module.pattern) == (
        42, 0x1234ABCD, 0x1234ABCD, b"\x00\xff", b"\x00\xff", report.PATTERN.choices[-1])
    words = {line.split()[1]: line.split()[2:] for line in out.splitlines() if line.startswith("WORDS ")}
    assert words == {w.name: list(w.choices) for w in (report.ACCESS, report.CACHE, report.PATTERN,
                                                         report.CPU_STATE)}


def test_report_rust_view_refuses_an_undescribed_key(tmp_path: Path) -> None:
    (tmp_path / "report.rs").write_text(rendered(REPORT_RS, extra=report.context()))
    (tmp_path / "main.rs").write_text('#[macro_use] #[allow(dead_code)] mod report { include!("report.rs"); }\n'
                                      'fn main() { println!(info_format!(block, no_such_key), 1u64, 2u64); }\n')
    out = subprocess.run(["rustc", "--edition", "2021", "-o", str(tmp_path / "main"), str(tmp_path / "main.rs")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode != 0 and "no_such_key" in out.stderr, out.stderr[-2000:]


def test_report_c_view_is_the_description(tmp_path: Path) -> None:
    """highboot_report.h's tags, INFO key prefixes and words, compiled by gcc and printed."""
    (tmp_path / "highboot_report.h").write_text(rendered(REPORT_H, extra=report.context()))
    lines = ['    puts(HIGHBOOT_REPORT_HEX);', f'    puts(HIGHBOOT_REPORT_{report.INFO_TAG});']
    lines += [f"    puts(HIGHBOOT_REPORT_{kind.tag});" for kind in report.LINES]
    lines += [f"    puts(HIGHBOOT_INFO_{k.name.upper()});" for k in report.INFO_KEYS]
    for words in (report.ACCESS, report.CACHE):
        lines.append(f"    {{ static const char *const w[] = HIGHBOOT_REPORT_{words.name.upper()};\n"
                     f"      for (unsigned i = 0; i < sizeof w / sizeof *w; i++) puts(w[i]); }}")
    (tmp_path / "c.c").write_text('#include <stdio.h>\n#include "highboot_report.h"\nint main(void) {\n'
                                  + "\n".join(lines) + "\n    return 0;\n}\n")
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(tmp_path / "c"), str(tmp_path / "c.c")], check=True,
                   timeout=120)
    c = subprocess.run([str(tmp_path / "c")], capture_output=True, text=True, check=True).stdout.splitlines()
    hex_prefix = report.FORMATS["hex"][1]
    assert c == [hex_prefix, report.INFO_TAG, *(kind.tag for kind in report.LINES),
                 *(f"{k.name}={k.c_prefix}" for k in report.INFO_KEYS), *report.ACCESS.choices,
                 *report.CACHE.choices]


def _declared(header: str, struct: str) -> list[str]:
    body = header[header.index(f"struct {struct} {{"):]
    body = body[:body.index("};")]
    return [line.split("/*")[0].strip() for line in body.splitlines()[1:] if line.strip()]


def test_module_abi_is_the_issues_contract() -> None:
    """The C names and types issue 16 spelled out for kernels, in this order, appended (v4) after
    everything version 3 had: pinned here, not taken from the description under test."""
    header = rendered("include/highboot.h.j2")
    assert _declared(header, "highboot_module") == ["uint64_t phys;", "uint64_t virt;", "uint64_t size;",
                                                    "uint64_t name;", "uint64_t cmdline;", "uint8_t digest[32];"]
    names = [f.name for f in bootinfo.BOOT_INFO]
    at = names.index("modules")
    assert names[at:at + 5] == ["modules", "module_count", "kernel_file_phys", "kernel_file_virt", "kernel_file_size"]
    assert names[at - 1] == "framebuffer_reserved_mask"  # the last field of version 3
    assert all(f.type == "u64" for f in bootinfo.BOOT_INFO[at:at + 5])


def test_cpu_abi_is_the_issues_contract() -> None:
    """Issue 18's C names and types, appended (v5) after version 4's last field, pinned here."""
    header = rendered("include/highboot.h.j2")
    assert _declared(header, "highboot_cpu") == ["uint32_t processor_id;", "uint32_t apic_id;",
                                                 "uint64_t goto_address;", "uint64_t extra_argument;",
                                                 "uint64_t stack_top;"]
    fields = list(bootinfo.BOOT_INFO)
    at = [f.name for f in fields].index("cpus")
    assert fields[at - 1].name == "kernel_file_size"
    assert [(f.name, f.type) for f in fields[at:at + 4]] == [("cpus", "u64"), ("cpu_count", "u64"),
                                                             ("bsp_apic_id", "u32"), ("cpu_flags", "u32")]
    assert "#define HIGHBOOT_CPU_X2APIC " in header and "#define HIGHBOOT_CPU_SMP " in header
    assert bootinfo.VERSION == 5
    assert "#define HIGHBOOT_VERSION 5u" in header


# Dialects a kernel may compile highboot.h in: (compiler, -std); each with -Wall -Wextra -pedantic -Werror.
DIALECTS = [("gcc", "c99"), ("gcc", "gnu99"), ("gcc", "c11"), ("gcc", "c17"),
            ("g++", "c++11"), ("g++", "c++17"), ("g++", "gnu++20")]


def _compile_header(tmp_path: Path, header: str, compiler: str, std: str) -> subprocess.CompletedProcess:
    (tmp_path / "highboot.h").write_text(header)
    (tmp_path / "highboot_report.h").write_text(rendered(REPORT_H, extra=report.context()))
    source = tmp_path / ("k.cpp" if compiler == "g++" else "k.c")
    # The structs and the constants (64-bit ones too) as a kernel uses them; a test kernel's report too.
    source.write_text('#include "highboot.h"\n#include "highboot_report.h"\n'
                      "int highboot_usable(const struct highboot_boot_info *info);\n"
                      "int highboot_usable(const struct highboot_boot_info *info) {\n"
                      "    const struct highboot_cpu *cpu = (const struct highboot_cpu *)(uintptr_t)info->cpus;\n"
                      "    return info->magic == HIGHBOOT_MAGIC && info->version == HIGHBOOT_VERSION\n"
                      "        && (info->cpu_features & HIGHBOOT_CPU_NX) && (info->cpu_flags & HIGHBOOT_CPU_SMP)\n"
                      "        && (cpu->goto_address & HIGHBOOT_PTE_NO_EXECUTE) && HIGHBOOT_REPORT_MAP[0] != 0;\n}\n")
    return subprocess.run([compiler, f"-std={std}", "-ffreestanding", "-Wall", "-Wextra", "-pedantic", "-Werror",
                           "-c", "-o", str(tmp_path / "k.o"), str(source)],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("compiler, std", DIALECTS, ids=[f"{c}-{s}" for c, s in DIALECTS])
def test_header_compiles_cleanly_in_c_and_cpp(tmp_path: Path, compiler: str, std: str) -> None:
    """highboot.h (and highboot_report.h) in C99 and later, C++11 and later, freestanding, pedantic,
    warnings as errors."""
    out = _compile_header(tmp_path, rendered("include/highboot.h.j2"), compiler, std)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("compiler, std", [("gcc", "c99"), ("gcc", "c11"), ("g++", "c++11")])
def test_header_checks_its_layout_at_compile_time(tmp_path: Path, compiler: str, std: str) -> None:
    """A struct size or field offset the compiler does not give stops the compile, in every way the
    header spells its checks (negative array, _Static_assert, static_assert), naming the check."""
    header = rendered("include/highboot.h.j2")
    at = bootinfo.offsets(bootinfo.CPU)[-1]
    for check, wrong in ((f"offsetof(struct highboot_cpu, stack_top) == {at})", f"offsetof(struct highboot_cpu, "
                          f"stack_top) == {at + 8})"),
                         (f"sizeof(struct highboot_module) == {bootinfo.size_of(bootinfo.MODULE)})",
                          f"sizeof(struct highboot_module) == {bootinfo.size_of(bootinfo.MODULE) - 8})")):
        assert header.count(check) == 1
        out = _compile_header(tmp_path, header.replace(check, wrong), compiler, std)
        assert out.returncode != 0
        assert ("cpu_stack_top" if "stack_top" in check else "sizeof_module") in out.stderr, out.stderr[-3000:]


def test_cpu_bits_rust_and_assembly_agree(built: dict, tmp_path: Path) -> None:
    """The control bits (cpu_bits.py) as the loader's Rust sees them (abi.rs, which cpu.rs re-exports)
    and as the trampoline's assembly does (abi.S's symbols, assembled and read back): the same values,
    and the trampoline spells no control-register mask as a bare number."""
    rust_bits = [(r, b) for r in cpu_bits.REGISTERS for b in r.rust_bits]
    out = run_rust(tmp_path, {"abi": rendered("loader/abi.rs.j2")},
                   "\n".join(f'    println!("{{}}", abi::{r.name}::{b.name} as u64);' for r, b in rust_bits)).split()
    assert [int(x) for x in out] == [b.value for _, b in rust_bits]
    trampoline = rendered("loader/trampoline.S.j2", built["plan"])
    with assemble(tmp_path, trampoline).open("rb") as f:
        symbols = {s.name: s["st_value"] for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols()}
    for r in cpu_bits.REGISTERS:
        for b in r.bits:
            name = f"{r.name.upper()}_{b.name}"
            assert symbols[name] == b.value, name
            if b.shift is not None:
                assert symbols[f"{name}_BIT"] == b.shift and 1 << b.shift == b.value, name
    code = "\n".join(line.split("//")[0] for line in trampoline.splitlines() if not line.strip().startswith(".set"))
    for bare in ("1 <<", "0x80000000", "0x7fffffff", "0xffffefff", "0xc0000080"):
        assert bare not in code, bare
    # cpu.rs spells none of them itself: it re-exports the rendered modules.
    cpu_rs = (Path(__file__).parents[1] / "loader" / "src" / "cpu.rs").read_text()
    assert "pub const" not in cpu_rs
    assert f"pub use crate::rendered::abi::{{{', '.join(sorted(r.name for r in cpu_bits.REGISTERS))}}};" in cpu_rs
