"""The serial report protocol (site_scons/testkit/report.py) as parse_report reads it: every line
of a known tag follows its description or is refused naming the line; other lines are skipped."""

from __future__ import annotations

import pytest
from testkit import report
from testkit.bootcheck import parse_report

from highboot.planning.paging import RW_NX, RX

GOOD = """\
BdsDxe: loading Boot0001 "UEFI QEMU HARDDISK QM00001" from PciRoot(0x0)
highboot: starting the kernel at 0xffffffff80000000
INFO block=0x7e00000 block_size=0x45000 tables=9 fb=1280x800
INFO cmdline="console=ttyS0 a=b" cmdline_hex=636f
INFO cmdline_hex=- bench_fragments=1000
MEM 0x0 0x9f000 1
MAP 0xffffffff80000000 0x7e00000 0x4000 RX
MAP 0xffffffff80004000 0x7e04000 0x2000 RW
EFI 0x7f000000 0xffffffef00000000 0x1000 RW UC
EFIX this is not a report line
HIGHBOOT-KERNEL: PASS
"""


def test_a_good_report_reads_back() -> None:
    r = parse_report(GOOD)
    assert r.facts == {"block": "0x7e00000", "block_size": "0x45000", "tables": "9", "fb": "1280x800",
                       "cmdline": "console=ttyS0 a=b", "cmdline_hex": "-", "bench_fragments": "1000"}
    assert r.memory == [(0, 0x9F000, 1)]
    assert [(m.va, m.pa, m.size, m.flags) for m in r.mappings] == [
        (0xFFFFFFFF80000000, 0x7E00000, 0x4000, int(RX)), (0xFFFFFFFF80004000, 0x7E04000, 0x2000, int(RW_NX))]
    assert [(m.va, m.pa) for m in r.efi] == [(0xFFFFFFEF00000000, 0x7F000000)]


def test_map_va_without_0x_is_refused() -> None:
    """The old spelling of a MAP line (no 0x): the protocol's hex always has it."""
    with pytest.raises(AssertionError, match=r"MAP ffffffff80004000 .*va is 'ffffffff80004000', expected a hex"):
        parse_report(GOOD.replace("MAP 0xffffffff80004000", "MAP ffffffff80004000"))


@pytest.mark.parametrize("line, why", [
    ("MEM 0x1000 0x2000", "2 fields, expected 3 (MEM base length type)"),
    ("MEM 0x1000 0x2000 1 2", "4 fields, expected 3 (MEM base length type)"),
    ("MEM 0x1000 0x2g00 1", "length is '0x2g00', expected a hex value"),
    ("MEM 0x1000 0x2000 0x1", "type is '0x1', expected a decimal value"),
    ("MEM 0x1000  0x2000 1", "4 fields, expected 3 (MEM base length type)"),
    ("MAP 0xffff800000000000 0x0 0x1000 WX", "access is 'WX', expected one of R, RW, RX, RWX"),
    ("MAP 0xffff800000000000 0x0 0x1000 rw", "access is 'rw', expected one of R, RW, RX, RWX"),
    ("MAP 0x12345678901234567 0x0 0x1000 R", "va is '0x12345678901234567', expected a hex value"),
    ("EFI 0x1000 0xffffffef00000000 0x1000 RW", "4 fields, expected 5 (EFI phys virt length access cache)"),
    ("EFI 0x1000 0xffffffef00000000 0x1000 RW WT", "cache is 'WT', expected one of WB, UC"),
    ("INFO block=12g", "block is '12g', expected a hex value"),
    ("INFO tables=0x9", "tables is '0x9', expected a decimal value"),
    ("INFO efi=none (the layout has no EFI region)", "expected key=value at '(the layout has no E'"),
    ("INFO shape=elf", "shape is 'elf', expected one of toolchain, exec, script"),
    ("INFO cmdline=unquoted", "cmdline is 'unquoted', expected a quoted value"),
    ("INFO cmdline_hex=abc", "cmdline_hex is 'abc', expected a hexbytes value"),
    ("INFO", "expected key=value at ''"),
    ("INFO block=0x1  tables=2", "expected key=value at ' tables=2'"),
])
def test_a_malformed_line_of_a_known_tag_is_refused_naming_it(line: str, why: str) -> None:
    with pytest.raises(AssertionError) as err:
        parse_report(f"BdsDxe: something\n{line}\nHIGHBOOT-KERNEL: PASS\n")
    assert str(err.value) == f"malformed report line {line!r}: {why}"


def test_every_described_key_and_line_has_a_format_parse_report_checks() -> None:
    assert {f.format for k in report.LINES for f in k.fields} | {k.format for k in report.INFO_KEYS} == {
        *report.FORMATS, report.CHOICE}
    for key in report.INFO_KEYS:  # a value that fits no format is refused for every key
        with pytest.raises(AssertionError, match=key.name):
            parse_report(f"INFO {key.name}=\"x\"y")
