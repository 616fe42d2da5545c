"""Layouts: the shipped ones load; every kind of mistake is one clear error naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from highboot.errors import HighbootError
from highboot.inputs.layout import is_canonical, load_layout

LAYOUTS = Path(__file__).resolve().parents[1] / "templates" / "layouts"


def test_shipped_layouts_load() -> None:
    linux = load_layout(LAYOUTS / "linux-x86_64.toml")
    assert linux.require("direct_map").start == 0xFFFF888000000000
    assert linux.require("direct_map").size == 64 << 40
    assert linux.require("kernel").start == 0xFFFFFFFF80000000
    assert linux.require("efi_runtime").start == 0xFFFFFFEF00000000
    assert linux.levels == 4
    minimal = load_layout(LAYOUTS / "minimal.toml")
    assert minimal.require("direct_map").start == 0xFFFFFF8000000000
    # mm.rst, 5-level paging: 32 PB direct map at ff11000000000000; the top 4 TB as with 4 levels.
    la57 = load_layout(LAYOUTS / "linux-x86_64-la57.toml")
    assert la57.levels == 5 and la57.va_bits == 57
    assert la57.require("direct_map").start == 0xFF11000000000000
    assert la57.require("direct_map").end == 0xFF91000000000000
    assert la57.require("kernel").start == linux.require("kernel").start
    assert la57.require("efi_runtime").start == linux.require("efi_runtime").start


def test_five_level_addresses_need_five_levels(tmp_path: Path) -> None:
    text = (LAYOUTS / "linux-x86_64-la57.toml").read_text().replace("levels = 5", "levels = 4")
    path = tmp_path / "la57-as-4.toml"
    path.write_text(text)
    with pytest.raises(HighbootError) as err:
        load_layout(path)
    assert "is not a canonical 48-bit address" in str(err.value) and "la57-as-4.toml" in str(err.value)


def test_canonical() -> None:
    assert is_canonical(0xFFFF800000000000, 48)
    assert is_canonical(0x00007FFFFFFFFFFF, 48)
    assert not is_canonical(0x0000800000000000, 48)
    assert not is_canonical(0xFFFF7FFFFFFFFFFF, 48)
    assert is_canonical(0xFF00000000000000, 57)
    assert not is_canonical(0xFE00000000000000, 57)


BASE = """
name = "t"
[[region]]
name = "dm"
role = "direct_map"
start = 0xffff888000000000
size = "64 TiB"
[[region]]
name = "k"
role = "kernel"
start = 0xffffffff80000000
size = "512 MiB"
"""


def load(tmp_path: Path, text: str) -> None:
    path = tmp_path / "layout.toml"
    path.write_text(text)
    load_layout(path)


def test_base_is_valid(tmp_path: Path) -> None:
    load(tmp_path, BASE)


@pytest.mark.parametrize("text, field, message", [
    (BASE + "colour = 1\n", "colour", "unknown key"),
    (BASE.replace('name = "k"\n', 'name = "k"\nflavour = 1\n'), "region 'k'.flavour", "unknown key"),
    (BASE.replace("start = 0xffff888000000000", "start = 0x0000100000000000").replace('"64 TiB"', '"1 TiB"'),
     "region 'dm'.start", "higher half"),
    (BASE.replace("start = 0xffff888000000000", "start = 0x8000000000000000"), "region 'dm'.start",
     "not a canonical"),
    (BASE.replace("start = 0xffffffff80000000", "start = 0xffffffff80001000\npage_size = \"2M\""),
     "region 'k'.start", "misaligned"),
    (BASE.replace("start = 0xffff888000000000", "start = 0xffff888000200000"), "region 'dm'.start", "misaligned"),
    (BASE.replace('size = "512 MiB"', 'size = "2 GiB"').replace("0xffffffff80000000", "0xffffffffc0000000"),
     "region 'k'.size", "past the top"),
    (BASE.replace('size = "64 TiB"', 'size = "tons"'), "region 'dm'.size", "expected a number"),
    (BASE.replace('size = "64 TiB"', "size = true"), "region 'dm'.size", "expected a size"),
    (BASE.replace('size = "64 TiB"', 'size = "64 TiB"\nend = 1'), "region 'dm'", "exactly one of"),
    (BASE.replace('role = "kernel"', 'role = "kernal"'), "region 'k'.role", "unknown role"),
    (BASE + '[[region]]\nname = "k2"\nrole = "kernel"\nstart = 0xffffffffa0000000\nsize = "4 MiB"\n',
     "region 'k2'.role", "at most one"),
    (BASE + '[[region]]\nname = "x"\nrole = "reserved"\nstart = 0xffffffff90000000\nsize = "4 MiB"\n',
     "region 'x'", "overlaps region 'k'"),
    (BASE + '[[region]]\nname = "dm"\nrole = "reserved"\nstart = 0xffffc90000000000\nsize = "4 MiB"\n',
     "region 'dm'", "two regions"),
    (BASE.replace('name = "t"', 'name = "t"\nlevels = 3'), "levels", "4 or 5"),
    (BASE.replace('name = "t"', 'name = "t"\nstack_size = 100'), "stack_size", "multiple of 4 KiB"),
    ('name = "t"\n', "region", "at least one"),
    (BASE.replace('role = "kernel"', 'role = "reserved"'), "region", "kernel"),
    (BASE.replace('[[region]]\nname = "k"', '[[region]]\nname = "k"\npage_size = "3M"'), "region 'k'.page_size",
     "expected one of"),
    (BASE.replace("start = 0xffff888000000000\n", ""), "region 'dm'", "missing key 'start'"),
    ("name = [", "", "not valid TOML"),
    (BASE.replace("0xffffffff80000000", "0x00007fff80000000").replace('size = "512 MiB"', "size = 0x100000000"),
     "region 'k'.size", "canonical"),
])
def test_layout_errors(tmp_path: Path, text: str, field: str, message: str) -> None:
    with pytest.raises(HighbootError) as err:
        load(tmp_path, text)
    assert message in str(err.value)
    assert str(tmp_path / "layout.toml") in str(err.value)
    assert field in str(err.value)


def test_missing_layout(tmp_path: Path) -> None:
    with pytest.raises(HighbootError, match="not found"):
        load_layout(tmp_path / "none.toml")
