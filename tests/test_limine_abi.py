"""One Limine ABI, three views: every structure spec.py describes (the protocol's structs, every
response and every request), as the loader's Rust sees it (templates/loader/protocol.rs.j2, compiled
for this machine and asked with offset_of!) and as the C header highboot-limine.h does (gcc,
offsetof), field by field and in size, must be spec.py's. A few layouts are pinned from the
protocol's own text, so that spec.py cannot drift with both views following it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hostrust import rendered, run_rust

from highboot.protocols.limine import LIMINE, spec
from highboot.protocols.limine.handover import LimineHandover

#: Every structure of the protocol, by its C name (without limine_).
STRUCTS: dict[str, spec.Struct] = {s.name: s for s in spec.STRUCTS}
STRUCTS.update({r.response.name: r.response for r in spec.REQUESTS})
STRUCTS.update({r.request.name: r.request for r in spec.REQUESTS})

#: Layouts as the protocol's PROTOCOL.md declares them (field: offset; then the size), counted by hand.
PINNED = {
    "framebuffer": ({"address": 0, "width": 8, "height": 16, "pitch": 24, "bpp": 32, "memory_model": 34,
                     "red_mask_size": 35, "blue_mask_shift": 40, "unused": 41, "edid_size": 48, "edid": 56,
                     "mode_count": 64, "modes": 72}, 80),
    "video_mode": ({"pitch": 0, "width": 8, "height": 16, "bpp": 24, "memory_model": 26, "red_mask_size": 27,
                    "blue_mask_shift": 32}, 40),
    "file": ({"revision": 0, "address": 8, "size": 16, "path": 24, "string": 32, "media_type": 40,
              "tftp_ip": 48, "mbr_disk_id": 60, "gpt_disk_uuid": 64, "gpt_part_uuid": 80, "part_uuid": 96}, 112),
    "mp_info": ({"processor_id": 0, "lapic_id": 4, "reserved": 8, "goto_address": 16, "extra_argument": 24}, 32),
    "memmap_entry": ({"base": 0, "length": 8, "type": 16}, 24),
    "framebuffer_response": ({"revision": 0, "framebuffer_count": 8, "framebuffers": 16}, 24),
    "mp_response": ({"revision": 0, "flags": 8, "bsp_lapic_id": 12, "cpu_count": 16, "cpus": 24}, 32),
    "module_request": ({"revision": 32, "response": 40, "internal_module_count": 48, "internal_modules": 56}, 64),
}


def expected(st: spec.Struct) -> list[int]:
    return [*st.offsets().values(), st.size]


def _rust_name(name: str) -> str:
    return name.title().replace("_", "")


def _rust_field(name: str) -> str:
    return "r#type" if name == "type" else name


def rust_view(tmp_path: Path, structs: list[spec.Struct]) -> list[list[int]]:
    """Each struct's field offsets and size as the loader's rendered protocol module has them."""
    # The module as a Limine build renders it; the handover itself (blob, answers) does not matter here.
    handover = LimineHandover(base_revision=6, revision=6, tag_va=None, supported=True, blob="", fixups=(),
                              answers=(), fills=(), stack_size=65536, entry=None, paging_mode=0, x2apic=False)
    plan = type("Plan", (), {"handover": type("Handover", (), {"limine": handover})()})()
    source = rendered("loader/protocol.rs.j2", plan, extra=LIMINE.context())
    body = []
    for st in structs:
        path = f"protocol::limine::{_rust_name(st.name)}"
        values = [f"core::mem::offset_of!({path}, {_rust_field(f.name)})" for f in st.fields]
        values.append(f"core::mem::size_of::<{path}>()")
        body.append(f'    println!("{" ".join("{}" for _ in values)}", {", ".join(values)});')
    out = run_rust(tmp_path, {"protocol": source}, "\n".join(body),
                   items="mod interrupts { pub const FIXED_AND_LOWEST: u8 = 1; pub const NMI_AND_EXTINT: u8 = 2; }")
    return [[int(x) for x in line.split()] for line in out.splitlines()]


def _c_field(name: str) -> str:
    """A request's ID words are one array in C (uint64_t id[4])."""
    return f"id[{name[3:]}]" if name.startswith("id_") else name


def c_view(tmp_path: Path, structs: list[spec.Struct], header: str | None = None) -> list[list[int]]:
    """Each struct's field offsets and size as highboot-limine.h declares them to gcc."""
    (tmp_path / "highboot-limine.h").write_text(header if header is not None else limine_header())
    lines = []
    for st in structs:
        values = [f"offsetof(struct limine_{st.name}, {_c_field(f.name)})" for f in st.fields]
        values.append(f"sizeof(struct limine_{st.name})")
        lines.append(f'    printf("{" ".join("%zu" for _ in values)}\\n", {", ".join(values)});')
    (tmp_path / "c.c").write_text('#include <stddef.h>\n#include <stdio.h>\n#include "highboot-limine.h"\n'
                                  "int main(void) {\n" + "\n".join(lines) + "\n    return 0;\n}\n")
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-o", str(tmp_path / "c"), str(tmp_path / "c.c")],
                   check=True, timeout=120)
    out = subprocess.run([str(tmp_path / "c")], capture_output=True, text=True, check=True, timeout=60).stdout
    return [[int(x) for x in line.split()] for line in out.splitlines()]


def limine_header() -> str:
    return rendered("include/highboot-limine.h.j2")


def rust_structs() -> list[spec.Struct]:
    """The structs the loader's Rust declares: the protocol's and every response it fills at boot."""
    return list(LIMINE.context()["limine_rust_structs"])


def test_the_rust_view_is_the_spec(tmp_path: Path) -> None:
    structs = rust_structs()
    # The loader declares every struct of the protocol and the framebuffer's response it fills.
    assert {s.name for s in spec.STRUCTS} | {"framebuffer_response", "mp_response", "memmap_response"} <= \
        {s.name for s in structs}
    assert rust_view(tmp_path, structs) == [expected(s) for s in structs]


def test_the_c_view_is_the_spec(tmp_path: Path) -> None:
    structs = list(STRUCTS.values())
    assert c_view(tmp_path, structs) == [expected(s) for s in structs]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_spec_is_the_protocols_layout(name: str) -> None:
    offsets, size = PINNED[name]
    st = STRUCTS[name]
    assert {k: st.offsets()[k] for k in offsets} == offsets
    assert st.size == size


def test_a_wrong_offset_in_a_view_is_found(tmp_path: Path) -> None:
    """The comparison can fail: a header whose framebuffer has one field more before `edid` (as a
    template edit would give it) disagrees with the spec."""
    header = limine_header()
    declaration = "    uint64_t edid_size;"
    assert header.count(declaration) == 1
    wrong = header.replace(declaration, declaration + "\n    uint64_t stray;")
    # The header's own size check stops such a header at compile time...
    with pytest.raises(subprocess.CalledProcessError):
        c_view(tmp_path, [STRUCTS["framebuffer"]], wrong)
    # ...and without that check, the offsets this test reads are not the spec's.
    unchecked = wrong.replace('_Static_assert(sizeof(struct limine_framebuffer) == 80, "limine_framebuffer");', "")
    assert unchecked != wrong
    assert c_view(tmp_path, [STRUCTS["framebuffer"]], unchecked) != [expected(STRUCTS["framebuffer"])]
