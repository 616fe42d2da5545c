"""Every CPU handed over (issue 18): the loader starts the MADT's processors after ExitBootServices,
parks each in the higher half on its own guarded stack, and the sample kernel releases them; each
AP checks its APIC ID, CR3, stack, extra_argument, IF, WP, NXE and LA57 on itself and answers,
and the BSP then walks the tables (lower half empty, no W+X) and the plan predicts every AP stack.

Also: the MADT reader and the IPI command values (hosted, loader/src/madt.rs), disabled MADT
entries, SMP=0 (the kernel starts the APs itself), a processor that never checks in (the
`lost_ap` test fault), MAX_CPUS, and the options' refusals."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hostrust import run_rust
from test_boot import check_boot
from test_matrix import config
from testkit.bootcheck import BootReport, kernel_slide, parse_report

from highboot.booting import qemu
from highboot.errors import HighbootError
from highboot.options.project import load_project
from highboot.options.schema import BY_NAME, parse
from highboot.planning.planner import BootPlan
from highboot.protocols.bootinfo import CPU_FLAGS, MEMORY_TYPES

PAGE = 4096
SMP_FLAG = next(c.value for c in CPU_FLAGS if c.name == "SMP")
LOADER_RECLAIMABLE = next(c.value for c in MEMORY_TYPES if c.name == "LOADER_RECLAIMABLE")
MADT_SOURCE = Path(__file__).resolve().parent.parent / "loader" / "src" / "madt.rs"


def parked_line(aps: int) -> str:
    return f"highboot: {aps} of {aps} application processor(s) parked"


def check_cpus(result: qemu.BootResult, plan: BootPlan, *, cpus: int, expect_1g: bool,
               not_started: int = 0) -> BootReport:
    """A passing boot whose kernel found `cpus` CPUs, released every AP and heard back from each,
    with each AP's stack where the plan puts it."""
    check_boot(result, plan, expect_1g=expect_1g)
    report = parse_report(result.serial)
    assert report.number("cpu_count") == cpus, result.serial[-3000:]
    assert report.number("cpus_failed") == 0
    assert report.number("cpus_not_started") == not_started
    assert report.number("cpu_flags") & SMP_FLAG
    assert report.number("ap_stack_size") == plan.ranges.ap_stack_size
    assert [c.index for c in report.cpus] == list(range(cpus))
    assert [c.state for c in report.cpus] == ["bsp"] + ["ok"] * (cpus - 1), result.serial[-3000:]
    # QEMU numbers a plain -smp N topology's APIC IDs 0..N-1, the BSP 0.
    assert sorted(c.apic_id for c in report.cpus) == list(range(cpus)) and report.cpus[0].apic_id == 0
    assert report.number("aps_released") == cpus - 1
    slide = kernel_slide(report)
    step = plan.ranges.ap_stack_size + PAGE
    for k, c in enumerate(report.cpus[1:]):
        assert c.stack_top == plan.ranges.ap_stacks_va + slide + k * step + PAGE + plan.ranges.ap_stack_size
    if cpus > 1:
        assert parked_line(cpus - 1) in result.serial
        # The startup page is below 1 MiB and loader-reclaimable in the kernel's memory map.
        page = report.number("trampoline_phys")
        assert 0 < page < 1 << 20
        assert any(b <= page and page + PAGE <= b + n and t == LOADER_RECLAIMABLE for b, n, t in report.memory)
    return report


@pytest.mark.parametrize("cpu, expect_1g", [("qemu64", False), ("max", True)])
@pytest.mark.parametrize("smp", [1, 2, 4, 8])
def test_every_ap_is_released(built: dict, cpu: str, expect_1g: bool, smp: int) -> None:
    result = qemu.boot(built["esp"], cpu=cpu, memory="256M", smp=smp, timeout=300)
    check_cpus(result, built["plan"], cpus=smp, expect_1g=expect_1g)


def test_more_cpus_than_the_host_has_cores(built: dict) -> None:
    result = qemu.boot(built["esp"], cpu="max", memory="512M", smp=16, timeout=400)
    check_cpus(result, built["plan"], cpus=16, expect_1g=True)


@pytest.mark.parametrize("name, smp, memory", [("la57", 4, "256M"), ("la57", 8, "1G"), ("kaslr", 4, "256M"),
                                               ("kaslr-la57", 8, "512M"), ("fw5-4level", 4, "1G"),
                                               ("fw5-la57", 2, "1G")])
def test_aps_on_other_layouts(built: dict, name: str, smp: int, memory: str) -> None:
    """5-level paging (CR4.LA57 set before paging in the AP's 32-bit step), KASLR (the stack window
    slides with the kernel), and a firmware in the other paging mode (the BSP changes the paging mode too)."""
    esp, plan = config(built, name)
    result = qemu.boot(esp, cpu="max", memory=memory, smp=smp, timeout=300)
    report = check_cpus(result, plan, cpus=smp, expect_1g=True)
    assert report.number("levels") == plan.tables.levels


def test_disabled_madt_entries_are_not_started(built: dict) -> None:
    """-smp 2,maxcpus=4: QEMU's MADT lists two more processors, not enabled (hot-pluggable)."""
    result = qemu.boot(built["esp"], cpu="max", memory="256M", smp="2,maxcpus=4", timeout=300)
    check_cpus(result, built["plan"], cpus=2, expect_1g=True)
    assert "highboot: 1 application processor(s) to start" in result.serial


def test_max_cpus_and_ap_stack_size(built: dict) -> None:
    esp, plan = config(built, "smp-max4-64k")
    assert plan.ranges.max_cpus == 4 and plan.ranges.ap_stack_size == 64 * 1024
    result = qemu.boot(esp, cpu="qemu64", memory="256M", smp=6, timeout=300)
    check_cpus(result, plan, cpus=4, expect_1g=False, not_started=2)


def test_smp_off_leaves_the_aps_to_the_kernel(built: dict) -> None:
    """SMP=0: one CPU listed, the loader starts nothing, and the kernel starts the three APs itself
    (INIT-SIPI-SIPI into a real-mode stub of its own): they were left startable."""
    esp, plan = config(built, "smp-off")
    assert not plan.options.smp and plan.ranges.ap_stack_size == 0
    result = qemu.boot(esp, cpu="max", memory="256M", smp=4, timeout=300)
    check_boot(result, plan, expect_1g=True)
    report = parse_report(result.serial)
    assert report.number("cpu_count") == 1 and [c.state for c in report.cpus] == ["bsp"]
    assert report.number("cpu_flags") & SMP_FLAG == 0
    assert report.number("cpus_not_started") == 3
    assert report.number("aps_self_started") == 3
    assert "application processor" not in result.serial


def test_a_processor_that_never_checks_in_is_left_out(built: dict) -> None:
    """The lost_ap fault adds a MADT processor (APIC ID 0xfe) that is not there: the loader waits
    its bounded time, says so on serial, leaves it out and counts it; the boot goes on."""
    esp, plan = config(built, "smp-lost-ap")
    result = qemu.boot(esp, cpu="max", memory="256M", smp=2, timeout=300)
    check_boot(result, plan, expect_1g=True)
    report = parse_report(result.serial)
    assert ("highboot: warning: the processor with APIC ID 0xfe did not check in within 2000 ms; it is left out"
            in result.serial)
    assert "highboot: 1 of 2 application processor(s) parked" in result.serial
    assert report.number("cpus_failed") == 1 and report.number("cpu_count") == 2
    assert [c.state for c in report.cpus] == ["bsp", "ok"]


def test_no_startup_page_leaves_the_aps_to_the_kernel(built: dict) -> None:
    """The no_low_page fault: no free page below 1 MiB. The loader says so, starts nothing, and
    the boot info says it did not (cpu_flags without SMP, every AP counted in cpus_not_started),
    so the kernel starts the APs itself."""
    esp, plan = config(built, "smp-no-low-page")
    assert plan.options.smp
    result = qemu.boot(esp, cpu="max", memory="256M", smp=3, timeout=300)
    check_boot(result, plan, expect_1g=True)
    assert ("highboot: warning: no free memory below 1 MiB for their startup page (0x8000000000000009); "
            "the application processors are not started") in result.serial
    report = parse_report(result.serial)
    assert report.number("cpu_count") == 1 and report.number("cpu_flags") & SMP_FLAG == 0
    assert report.number("cpus_not_started") == 2 and report.number("aps_self_started") == 2


# The C sample kernel (examples/c-kernel/kernel.c), through highboot.h: the same releases, checks
# and CPU lines, on the fixed-address and the PIE kernel.

@pytest.mark.parametrize("name, cpu, smp, expect_1g", [("c-kernel", "qemu64", 4, False), ("c-kernel", "max", 8, True),
                                                       ("c-kernel-pie", "max", 2, True)])
def test_c_kernel_releases_every_ap(built: dict, name: str, cpu: str, smp: int, expect_1g: bool) -> None:
    esp, plan = config(built, name)
    result = qemu.boot(esp, cpu=cpu, memory="1G", smp=smp, timeout=300)
    assert "highboot C kernel: hello" in result.serial
    check_cpus(result, plan, cpus=smp, expect_1g=expect_1g)


def test_c_kernel_starts_the_aps_itself_with_smp_off(built: dict) -> None:
    esp, plan = config(built, "c-kernel-smp-off")
    result = qemu.boot(esp, cpu="qemu64", memory="1G", smp=4, timeout=300)
    assert "highboot C kernel: hello" in result.serial
    check_boot(result, plan, expect_1g=False)
    report = parse_report(result.serial)
    assert report.number("cpu_count") == 1 and [c.state for c in report.cpus] == ["bsp"]
    assert report.number("cpus_not_started") == 3 and report.number("aps_self_started") == 3


# The MADT reader (hosted): tables built here, byte by byte, from the ACPI 6.5 layouts.

def madt(entries: list[bytes], revision: int = 5, checksum_ok: bool = True) -> bytes:
    body = struct.pack("<II", 0xFEE00000, 1) + b"".join(entries)
    header = b"APIC" + struct.pack("<IBB6s8sI4sI", 36 + len(body), revision, 0, b"OEMID ", b"TABLE   ", 1,
                                   b"TEST", 1)
    table = bytearray(header + body)
    table[9] = (-sum(table) + (0 if checksum_ok else 1)) & 0xFF
    return bytes(table)


def lapic(uid: int, apic_id: int, flags: int) -> bytes:
    return struct.pack("<BBBBI", 0, 8, uid, apic_id, flags)


def x2apic(uid: int, apic_id: int, flags: int) -> bytes:
    return struct.pack("<BBHIII", 9, 16, 0, apic_id, flags, uid)


def madt_source() -> str:
    """loader/src/madt.rs as a module of the test program (its //! lines document the file)."""
    return MADT_SOURCE.read_text().replace("//!", "//")


IOAPIC = struct.pack("<BBBBII", 1, 12, 0, 0, 0xFEC00000, 0)


def read_madts(tmp_path: Path, tables: list[bytes]) -> list[str]:
    """What madt::processors makes of each table: "uid:apic" items, or the error."""
    arrays = ", ".join("&[" + ", ".join(str(b) for b in t) + "]" for t in tables)
    body = f"""
    let tables: [&[u8]; {len(tables)}] = [{arrays}];
    for t in tables.iter() {{
        let mut out = std::string::String::new();
        match madt::processors(t, |p| out += &format!("{{}}:{{:#x}} ", p.uid, p.apic_id)) {{
            Ok(()) => println!("{{}}", out.trim_end()),
            Err(e) => println!("error: {{}}", e),
        }}
    }}
    """
    return run_rust(tmp_path, {"madt": madt_source()}, body).splitlines()


def test_madt_processors(tmp_path: Path) -> None:
    tables = [
        # Enabled Local APICs and an I/O APIC between them; a disabled one; the 0xff "no processor".
        madt([lapic(0, 0, 1), IOAPIC, lapic(1, 2, 1), lapic(2, 4, 0), lapic(3, 0xFF, 1)]),
        # Local x2APIC entries with IDs past 254; one listed twice (Local APIC and x2APIC).
        madt([lapic(0, 0, 1), x2apic(1000, 0x100, 1), x2apic(1001, 0xFFFF_FFFF, 1), x2apic(7, 0, 1),
              x2apic(1002, 0x12345678, 1)]),
        # Online-capable, not enabled: startable in MADT revision 5, a reserved bit before it.
        madt([lapic(0, 0, 1), lapic(1, 1, 2), x2apic(2, 0x200, 2)], revision=5),
        madt([lapic(0, 0, 1), lapic(1, 1, 2), x2apic(2, 0x200, 2)], revision=4),
        # Malformed: a bad checksum; an entry running past the end; a Local APIC entry too short;
        # a length that disagrees with the bytes; a zero-length entry (would loop forever).
        madt([lapic(0, 0, 1)], checksum_ok=False),
        madt([lapic(0, 0, 1), bytes([0, 8, 1, 1])]),
        madt([lapic(0, 0, 1), bytes([0, 6, 1, 1, 1, 0])]),
        madt([lapic(0, 0, 1)])[:-1],
        madt([lapic(0, 0, 1), bytes([5, 0, 0, 0])]),
    ]
    assert read_madts(tmp_path, tables) == [
        "0:0x0 1:0x2",
        "0:0x0 1000:0x100 1002:0x12345678",
        "0:0x0 1:0x1 2:0x200",
        "0:0x0",
        "error: its checksum is wrong",
        "error: the entry at offset 0x34 is malformed",
        "error: the entry at offset 0x34 is malformed",
        "error: its length does not fit its header",
        "error: the entry at offset 0x34 is malformed",
    ]


def test_madt_uid_of_is_the_listed_entrys(tmp_path: Path) -> None:
    """The UID the loader writes into an AP's record: the first startable entry's with its APIC ID
    (the one processors() lists), in one pass; none for an ID the table does not start."""
    table = madt([lapic(0, 0, 1), lapic(5, 2, 0), x2apic(1000, 2, 1), lapic(6, 2, 1), x2apic(7, 0x100, 1)])
    arrays = ", ".join(str(b) for b in table)
    out = run_rust(tmp_path, {"madt": madt_source()}, f"""
    let t: &[u8] = &[{arrays}];
    for id in [0u32, 2, 0x100, 4] {{
        println!("{{:?}}", madt::uid_of(t, id));
    }}
    """).split()
    assert out == ["Some(0)", "Some(1000)", "Some(7)", "None"]


def test_interrupt_command_values(tmp_path: Path) -> None:
    """INIT and Start-Up as the SDM spells them (vol. 3A, 11.6.1): delivery mode in bits 8-10,
    level assert (bit 14), the start page number as the vector; xAPIC destination in ICR bits
    56-63 (its high word's 24-31), x2APIC destination in the MSR's high half."""
    out = run_rust(tmp_path, {"madt": madt_source()}, """
    println!("{:#x} {:#x} {:#x}", madt::ICR_INIT, madt::icr_startup(0x9e000), madt::icr_startup(0x8000));
    println!("{:#x} {:#x}", madt::xapic_destination(3), madt::x2apic_icr(0x12345678, madt::icr_startup(0x9e000)));
    """).split()
    assert out == ["0x4500", "0x469e", "0x4608", "0x3000000", "0x123456780000469e"]


# The options.

def smp_options(stack: str, cpus: str, file: str | None = None) -> tuple[int, int]:
    where = {"file": file, "field": "ap_stack_size" if file else None}
    size = parse(BY_NAME["AP_STACK_SIZE"], stack, **where)
    where = {"file": file, "field": "max_cpus" if file else None}
    return size, parse(BY_NAME["MAX_CPUS"], cpus, **where)


def test_smp_options_are_checked() -> None:
    assert smp_options("16 KiB", "256") == (16384, 256)
    assert smp_options("16K", "1_024") == (16384, 1024)
    # A refusal names the option on the command line and the key in a project file, whatever the
    # value; a count takes no size units ("1 KiB" CPUs is not 1024).
    for stack, cpus, field in (("1000", "4", "AP_STACK_SIZE"), ("0", "4", "AP_STACK_SIZE"),
                               ("lots", "4", "AP_STACK_SIZE"), ("16K", "0", "MAX_CPUS"),
                               ("16K", "100000", "MAX_CPUS"), ("16K", "four", "MAX_CPUS"),
                               ("16K", "1 KiB", "MAX_CPUS"), ("16K", "1k", "MAX_CPUS"), ("16K", "0x10", "MAX_CPUS"),
                               ("16K", "9" * 5000, "MAX_CPUS")):
        with pytest.raises(HighbootError) as exc:
            smp_options(stack, cpus)
        assert exc.value.field == field and exc.value.file is None, exc.value.format()
        with pytest.raises(HighbootError) as exc:
            smp_options(stack, cpus, file="p.toml")
        assert exc.value.field == field.lower() and exc.value.file == "p.toml", exc.value.format()


def test_project_file_smp_keys(tmp_path: Path) -> None:
    path = tmp_path / "highboot.toml"
    path.write_text('smp = false\nap_stack_size = "32 KiB"\nmax_cpus = 8\n')
    assert load_project(path).options == {"SMP": "0", "AP_STACK_SIZE": "32 KiB", "MAX_CPUS": "8"}
    path.write_text("max_cpus = 0\n")
    with pytest.raises(HighbootError) as exc:
        load_project(path)
    assert exc.value.field == "max_cpus" and str(path) in exc.value.format()
    path.write_text('smp = "yes"\n')
    with pytest.raises(HighbootError) as exc:
        load_project(path)
    assert exc.value.field == "smp"


def each_madt(tmp_path: Path, tables: list[bytes], walk: str) -> list[str]:
    """What `walk` (a madt:: function of the table and a callback, which appends to `out`) makes of
    each table: one line per table, or the error."""
    arrays = ", ".join("&[" + ", ".join(str(b) for b in t) + "]" for t in tables)
    body = f"""
    let tables: [&[u8]; {len(tables)}] = [{arrays}];
    for t in tables.iter() {{
        let mut out = std::string::String::new();
        match {walk} {{
            Ok(()) => println!("{{}}", out.trim_end()),
            Err(e) => println!("error: {{}}", e),
        }}
    }}
    """
    return run_rust(tmp_path, {"madt": madt_source()}, body).splitlines()


def test_madt_io_apics(tmp_path: Path) -> None:
    """madt::io_apics (the Limine handover masks their entries): each I/O APIC's address, in order;
    a malformed table gives none."""
    second = struct.pack("<BBBBII", 1, 12, 1, 0, 0xFEC01000, 24)
    tables = [madt([lapic(0, 0, 1), IOAPIC, lapic(1, 1, 1), second]), madt([lapic(0, 0, 1)]),
              madt([IOAPIC], checksum_ok=False), madt([IOAPIC, bytes([1, 0, 0, 0])])]
    assert each_madt(tmp_path, tables, 'madt::io_apics(t, |a| out += &format!("{:#x} ", a))') == [
        "0xfec00000 0xfec01000", "", "error: its checksum is wrong", "error: the entry at offset 0x38 is malformed"]


def test_madt_lint_nmis(tmp_path: Path) -> None:
    """madt::lint_nmis (Limine base revision 5 wires the local APICs' LINT pins): each Local APIC NMI
    (type 4; UID 0xff: every processor) and Local x2APIC NMI (type 0x0a) entry, in order."""
    every = struct.pack("<BBBHB", 4, 6, 0xFF, 0x000D, 1)
    one = struct.pack("<BBBHB", 4, 6, 3, 0x0005, 0)
    x2 = struct.pack("<BBHIB3s", 0x0A, 12, 0x000F, 1000, 1, bytes(3))
    tables = [madt([lapic(0, 0, 1), every, IOAPIC, one, x2]), madt([lapic(0, 0, 1)])]
    assert each_madt(tmp_path, tables, 'madt::lint_nmis(t, |n| out += &format!("{:#x}:{}:{:#x} ", n.uid, n.lint, '
                                       'n.flags))') == ["0xffffffff:1:0xd 0x3:0:0x5 0x3e8:1:0xf", ""]
    # The LVT bits per processor (LINT1 in the high half): NMI delivery, active low (flags 11 in
    # bits 0..1), level (11 in bits 2..3); a later entry for the same pin wins.
    wiring = "; ".join(f'println!("{{:#x}}", madt::lint_nmi(t, {uid}))' for uid in (3, 1000, 5))
    body = f"let t: &[u8] = &[{', '.join(str(b) for b in tables[0])}];\n{wiring};"
    assert run_rust(tmp_path, {"madt": madt_source()}, body).split() == ["0x840000000400", "0xa40000000000",
                                                                          "0x840000000000"]
