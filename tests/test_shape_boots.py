"""Real boots of kernels as their toolchains emit them: position-independent, linked at 0 by the
toolchain's own default layout, placed by the build. A C kernel by gcc -static-pie with RELA (GNU
ld), the same with RELR (-z pack-relative-relocs), the same linked by ld.lld with
--pack-dyn-relocs=relr, and the Rust sample kernel built from a JSON target spec like real Rust
kernels use (kernel/x86_64-highboot-pie.json). Each boots with and without KASLR, on 4-level and
5-level paging (SHAPE_CONFIGS in SConstruct), checks itself (relocated pointers in .data.rel.ro
and .data, its own program headers against the boot info, RELRO read-only and text RX in the live
tables) and walks its tables; the test compares the walk with the plan and, independently of the
planner, with the program headers pyelftools reads from the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from elftools.elf.descriptions import describe_reloc_type
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from test_boot import check_boot
from test_matrix import config
from testkit.bootcheck import FLAGS, BootReport, kernel_slide, parse_report

from highboot.booting import qemu

PAGE = 4096
SHAPES = [f"shape-{kernel}{variant}" for kernel in ("gcc-rela", "gcc-relr", "lld-relr", "rust-spec")
          for variant in ("", "-kaslr", "-la57", "-la57-kaslr")] + ["shape-gcc-rela-base", "shape-lld-shared-kaslr"]


def kernel_file(built: dict, name: str) -> Path:
    """The kernel a shape configuration boots (one file per toolchain, shared by its builds)."""
    kernel = name.removeprefix("shape-")
    for suffix in ("-base", "-la57-kaslr", "-la57", "-kaslr"):
        kernel = kernel.removesuffix(suffix)
    return built["dir"] / "test" / "shapes" / kernel / "kernel.elf"


def headers(path: Path) -> tuple[str, dict[str, list], dict[int, int], set[str]]:
    """e_type, program headers by type, dynamic tags, relocation types: read with pyelftools."""
    with path.open("rb") as f:
        elf = ELFFile(f)
        phdrs: dict[str, list] = {}
        for seg in elf.iter_segments():
            phdrs.setdefault(seg["p_type"], []).append(dict(seg.header))
        dynamic = elf.get_section_by_name(".dynamic")
        tags = {t.entry.d_tag: t.entry.d_val for t in dynamic.iter_tags()} if dynamic else {}
        types = {describe_reloc_type(r["r_info_type"], elf) for sec in elf.iter_sections()
                 if isinstance(sec, RelocationSection) for r in sec.iter_relocations()}
        return elf["e_type"], phdrs, tags, types


def flags_at(report: BootReport, va: int) -> int | None:
    for m in report.mappings:
        if m.va <= va < m.va + m.size:
            return m.flags
    return None


@pytest.mark.parametrize("name", SHAPES)
def test_toolchain_kernel_boots(built: dict, name: str) -> None:
    esp, plan = config(built, name)
    result = qemu.boot(esp, cpu="max", memory="1G")
    check_boot(result, plan, expect_1g=True)
    report = parse_report(result.serial)
    assert report.facts["shape"] == "toolchain", "the kernel did not run its own-image checks"
    assert int(report.facts["levels"]) == plan.tables.levels

    etype, phdrs, tags, types = headers(kernel_file(built, name))
    loads = phdrs["PT_LOAD"]
    assert etype == "ET_DYN" and min(p["p_vaddr"] for p in loads) == 0, "not a PIE linked at 0"
    assert "PT_INTERP" not in phdrs and {"PT_DYNAMIC", "PT_GNU_RELRO", "PT_GNU_STACK"} <= set(phdrs)
    packed = "DT_RELR" in tags or 36 in tags
    assert packed == ("relr" in name), f"relocation format: {sorted(map(str, tags))}"
    if "shared" in name:  # calls and addresses through the GOT and PLT, resolved by the build
        assert {"R_X86_64_GLOB_DAT", "R_X86_64_JUMP_SLOT"} <= types, types

    # Where the kernel's addresses went: the build's placement plus this boot's KASLR slide.
    bias = report.number("kernel_load_bias")
    assert bias == (plan.placement.load_bias + kernel_slide(report)) % (1 << 64)
    if name.endswith("-base"):
        assert plan.placement.image_va == 0xFFFFFFFF81000000
    else:
        assert plan.placement.load_bias % (2 << 20) == 0 and plan.placement.load_bias >= 0xFFFFFFFF80000000

    # RELRO is read-only and NX by ld.so's rule (the page it starts in to the page its end rounds
    # down to); executable segments are RX.
    relro = phdrs["PT_GNU_RELRO"][0]
    start, end = relro["p_vaddr"] + bias, relro["p_vaddr"] + relro["p_memsz"] + bias
    pages = range(start // PAGE * PAGE, end // PAGE * PAGE, PAGE)
    assert len(pages) == int(report.facts["relro_pages"]) > 0
    for va in pages:
        assert flags_at(report, va) == FLAGS["R"], f"RELRO page {va:#x} is not read-only + NX"
    for p in loads:
        if p["p_flags"] & 1:
            for va in range((p["p_vaddr"] + bias) // PAGE * PAGE, p["p_vaddr"] + p["p_memsz"] + bias, PAGE):
                assert flags_at(report, va) == FLAGS["RX"], f"text page {va:#x} is not RX"
    if "PT_GNU_EH_FRAME" in phdrs:
        eh = phdrs["PT_GNU_EH_FRAME"][0]
        assert report.number("eh_frame_hdr") == eh["p_vaddr"] + bias
        assert report.number("eh_frame_hdr_size") == eh["p_memsz"]
    if "PT_TLS" in phdrs:
        assert report.number("tls_template") == phdrs["PT_TLS"][0]["p_vaddr"] + bias
        assert report.number("tls_mem_size") == phdrs["PT_TLS"][0]["p_memsz"]


def test_rust_spec_kernel_is_built_from_the_target_spec(built: dict) -> None:
    """The fixture's facts: the spec asks for PIE, full RELRO and an eh_frame_hdr, linked by ld.lld."""
    spec = json.loads((Path(__file__).resolve().parents[1] / "kernel" / "x86_64-highboot-pie.json").read_text())
    assert spec["position-independent-executables"] is True and spec["relro-level"] == "full"
    assert spec["code-model"] == "kernel" and spec["linker-flavor"] == "ld.lld"
    _, phdrs, _, _ = headers(kernel_file(built, "shape-rust-spec"))
    assert "PT_GNU_EH_FRAME" in phdrs and "PT_TLS" in phdrs
