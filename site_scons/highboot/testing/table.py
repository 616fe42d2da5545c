"""A project's `[test]` table: how `scons test` tests the project's kernel, and on which machines.

    [test]
    success_exit_code = 33        # QEMU's exit status that means pass (the kernel wrote 0x10 to port 0xf4)
    success = "ALL TESTS PASSED"  # or: a regular expression on serial that means pass
    failure = "PANIC|FAILED"      # a regular expression on serial that means fail at once
    timeout = "60 s"              # per boot
    qemu_args = ["-device", "virtio-rng-pci"]

    [[test.machine]]
    name = "big-la57-kaslr"       # names the machine's logs and results (letters, digits, . _ -)
    cpu = "max"                   # QEMU's -cpu (a model, then ,feature=... if wanted)
    memory = "8G"                 # QEMU's -m, with a unit
    cpus = 8                      # QEMU's -smp
    boots = 5                     # boot it this many times (each a fresh QEMU)
    layout = "layouts/la57.toml"  # any build option of the project file: this machine's build
    kaslr = true
    timeout = "120 s"             # and its own timeout / extra qemu_args (after the table's)

Nothing here imports SCons; the project file reader (highboot.options.project) hands the table
here, with a reader for the build options a machine may set.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from highboot.errors import HighbootError
from highboot.inputs.modules import Module
from highboot.units import MIB, TIB, parse_int

#: bootimage's convention: the kernel writes 0x10 to isa-debug-exit, QEMU exits (0x10 << 1) | 1.
DEFAULT_SUCCESS_EXIT_CODE = 33
#: Per boot: OVMF alone takes several seconds under TCG, more with many CPUs or much memory.
DEFAULT_TIMEOUT = 120.0
MAX_TIMEOUT = 24 * 3600.0
MAX_BOOTS = 1000
#: QEMU's q35 with TCG: more than 255 CPUs need x2APIC and interrupt remapping, which OVMF's
#: machine here does not have.
MAX_CPUS = 255
#: OVMF does not come up in less; QEMU refuses a RAM size its address space cannot hold.
MIN_MEMORY, MAX_MEMORY = 64 * MIB, TIB
#: What the runner itself gives QEMU (the serial port it reads, the QMP socket it drives, how it
#: stops): a test's qemu_args may not take them over.
RUNNER_OWNS = ("-serial", "-monitor", "-mon", "-qmp", "-qmp-pretty", "-display", "-nographic", "-daemonize",
               "-action", "-no-shutdown", "-S", "-pidfile", "-incoming")
#: QEMU arguments a machine's keys give.
MACHINE_OWNS = {"-m": "memory", "-smp": "cpus", "-cpu": "cpu"}
TABLE_KEYS = ("success_exit_code", "success", "failure", "timeout", "qemu_args", "machine")
MACHINE_KEYS = ("name", "cpu", "memory", "cpus", "boots", "timeout", "qemu_args")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CPU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(,[A-Za-z0-9_.+=-]+)*$")
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(s|sec|seconds?|m|min|minutes?)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Machine:
    name: str
    cpu: str = "max"
    memory_mib: int = 256
    cpus: int = 1
    boots: int = 1
    timeout: float = DEFAULT_TIMEOUT
    qemu_args: tuple[str, ...] = ()  # the table's, then the machine's own
    # The machine's build: build-option values (NAME -> text) over the project's, and its own
    # module list and template directories when it gives them (None: the project's).
    options: tuple[tuple[str, str], ...] = ()
    modules: tuple[Module, ...] | None = None
    templates: tuple[str, ...] | None = None
    index: int = 0  # its place in the table (test.machine[index])

    @property
    def memory(self) -> str:
        """QEMU's -m (and how the summary shows it)."""
        return f"{self.memory_mib >> 10}G" if self.memory_mib % 1024 == 0 else f"{self.memory_mib}M"

    def field(self, key: str) -> str:
        return f"test.machine[{self.index}].{key}"


@dataclass(frozen=True)
class TestTable:
    success_exit_code: int | None = DEFAULT_SUCCESS_EXIT_CODE
    success: str = ""  # a regular expression on serial ("" none)
    failure: str = ""
    machines: tuple[Machine, ...] = field(default_factory=tuple)

    def machine(self, name: str, *, file: str | None = None, field: str = "MACHINE") -> Machine:
        for m in self.machines:
            if m.name == name:
                return m
        raise HighbootError(f"no machine {name!r} in the project's [test] table; it has "
                            f"{', '.join(m.name for m in self.machines)}", file=file, field=field)


@dataclass(frozen=True)
class Boot:
    """One boot of a machine: its number (1-based) and the name its log and result go by."""

    machine: Machine
    number: int

    @property
    def name(self) -> str:
        return self.machine.name if self.machine.boots == 1 else f"{self.machine.name}-{self.number}"


def boots(table: TestTable) -> list[Boot]:
    """Every boot of the table, in its order: each machine's boots one after another."""
    return [Boot(m, n) for m in table.machines for n in range(1, m.boots + 1)]


def parse_shard(text: str, *, field: str = "TEST_SHARD") -> tuple[int, int] | None:
    """TEST_SHARD=k/n (1 <= k <= n): run the k-th of n slices; "" runs every boot."""
    if not text:
        return None
    m = re.fullmatch(r"\s*([0-9]{1,6})\s*/\s*([0-9]{1,6})\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise HighbootError(f"expected k/n with 1 <= k <= n (the k-th of n slices of the boots), got {text!r}",
                            field=field)
    return int(m.group(1)), int(m.group(2))


def shard(all_boots: list[Boot], which: tuple[int, int] | None) -> list[Boot]:
    """The boots of slice k of n: every n-th boot of the table's order, starting at the k-th. The
    same table always splits the same way, and the slices differ in size by one boot at most."""
    if which is None:
        return list(all_boots)
    k, n = which
    return [b for i, b in enumerate(all_boots) if i % n == k - 1]


# ------------------------------------------------------------------------------------ reading the table

#: read_build(value_table, where) -> (options, modules, templates): a machine's build options, read as
#: the project file reads its own (highboot.options.project), refusals naming where + key.
BuildReader = Callable[[dict[str, Any], str], tuple[dict[str, str], tuple[Module, ...] | None,
                                                     tuple[str, ...] | None]]


def read_table(value: Any, *, file: str, read_build: BuildReader, build_keys: tuple[str, ...]) -> TestTable:
    """The [test] table, checked: every refusal names the file and the field (test.machine[1].memory)."""
    if not isinstance(value, dict):
        raise HighbootError(f"expected a table ([test]), got {_kind(value)}", file=file, field="test")
    _known(value, TABLE_KEYS, file, "test")
    code = value.get("success_exit_code", DEFAULT_SUCCESS_EXIT_CODE)
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
        raise HighbootError(f"expected QEMU's exit status, a whole number 0-255 (33: the kernel wrote 0x10 to the "
                            f"isa-debug-exit port 0xf4), got {code!r}", file=file, field="test.success_exit_code")
    success = _regex(value, "success", file, "test")
    failure = _regex(value, "failure", file, "test")
    timeout = _timeout(value.get("timeout"), file, "test.timeout", DEFAULT_TIMEOUT)
    args = _qemu_args(value.get("qemu_args", []), file, "test.qemu_args")
    entries = value.get("machine", [{"name": "default"}])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries) or not entries:
        raise HighbootError("expected [[test.machine]] tables, one per machine", file=file, field="test.machine")
    machines: list[Machine] = []
    for i, entry in enumerate(entries):
        where = f"test.machine[{i}]"
        _known(entry, MACHINE_KEYS + build_keys, file, where)
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise HighbootError(f"expected a name of letters, digits, '.', '_' and '-' (at most 64; it names the "
                                f"machine's log files), got {name!r}", file=file, field=f"{where}.name")
        if any(m.name == name for m in machines):
            raise HighbootError(f"machine name {name!r} is used twice; each machine needs a name of its own",
                                file=file, field=f"{where}.name")
        build = {k: v for k, v in entry.items() if k in build_keys}
        options, modules, templates = read_build(build, where)
        machines.append(Machine(
            name=name, cpu=_cpu(entry.get("cpu", "max"), file, f"{where}.cpu"),
            memory_mib=_memory(entry.get("memory", "256M"), file, f"{where}.memory"),
            cpus=_count(entry.get("cpus", 1), 1, MAX_CPUS, "a number of CPUs", file, f"{where}.cpus"),
            boots=_count(entry.get("boots", 1), 1, MAX_BOOTS, "a number of boots", file, f"{where}.boots"),
            timeout=_timeout(entry.get("timeout"), file, f"{where}.timeout", timeout),
            qemu_args=args + _qemu_args(entry.get("qemu_args", []), file, f"{where}.qemu_args"),
            options=tuple(sorted(options.items())), modules=modules, templates=templates, index=i))
    table = TestTable(success_exit_code=code, success=success, failure=failure, machines=tuple(machines))
    seen: dict[str, Boot] = {}
    for b in boots(table):  # (a machine "a" booted twice has boots a-1 and a-2: a machine named "a-1" would clash)
        if b.name in seen:
            other = seen[b.name].machine
            raise HighbootError(f"boot {b.number} of machine {b.machine.name!r} and "
                                f"{'boot ' + str(seen[b.name].number) + ' of ' if other.boots > 1 else ''}machine "
                                f"{other.name!r} would both be named {b.name!r} (logs, results); rename one",
                                file=file, field=b.machine.field("name"))
        seen[b.name] = b
    return table


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _known(table: dict[str, Any], keys: tuple[str, ...], file: str, where: str) -> None:
    for key in table:
        if key not in keys:
            raise HighbootError(f"unknown key {key!r}; expected one of {', '.join(keys)}", file=file,
                                field=f"{where}.{key}")


def _regex(table: dict[str, Any], key: str, file: str, where: str) -> str:
    text = table.get(key, "")
    if not isinstance(text, str):
        raise HighbootError(f"expected a regular expression (a string), got {_kind(text)}", file=file,
                            field=f"{where}.{key}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (a FutureWarning, "possible nested set", is a refusal too)
            re.compile(text)
    except (re.error, FutureWarning, DeprecationWarning) as exc:
        raise HighbootError(f"not a regular expression Python compiles: {exc}", file=file,
                            field=f"{where}.{key}") from None
    return text


def _timeout(value: Any, file: str, field: str, default: float) -> float:
    if value is None:
        return default
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e12:
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * (60 if (m.group(2) or "s").lower().startswith("m") else 1)
    if seconds is None or not 1 <= seconds <= MAX_TIMEOUT:
        raise HighbootError(f"expected a time per boot such as \"60 s\" or \"5 min\" (1 s to 24 h), got {value!r}",
                            file=file, field=field)
    return seconds


def _qemu_args(value: Any, file: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise HighbootError(f"expected a list of strings (QEMU's arguments, one per item), got {value!r}",
                            file=file, field=field)
    for a in value:
        if "\0" in a:
            raise HighbootError(f"argument {a!r} holds a NUL character", file=file, field=field)
        option = a[1:] if a.startswith("--") else a  # (QEMU takes --serial too)
        if option in RUNNER_OWNS:
            raise HighbootError(f"{a} is the test runner's own (it reads serial, drives QEMU through QMP and stops "
                                "it); leave it out", file=file, field=field)
        if option in MACHINE_OWNS:
            raise HighbootError(f"{a} is the machine's {MACHINE_OWNS[option]} = ...; set that instead (the summary "
                                "shows it)", file=file, field=field)
    return tuple(value)


def _cpu(value: Any, file: str, field: str) -> str:
    if not isinstance(value, str) or not _CPU.match(value):
        raise HighbootError(f"expected a QEMU CPU model such as \"max\" or \"qemu64\" (then ,feature=... if "
                            f"wanted), got {value!r}", file=file, field=field)
    return value


def check_cpu_models(table: TestTable, models: set[str], *, file: str) -> None:
    """Every machine's CPU model is one QEMU knows (`qemu-system-x86_64 -cpu help`)."""
    for m in table.machines:
        model = m.cpu.split(",")[0]
        if model not in models:
            raise HighbootError(f"QEMU has no CPU model {model!r} (qemu-system-x86_64 -cpu help lists them)",
                                file=file, field=m.field("cpu"))


def check_host_memory(table: TestTable, host: int | None, *, file: str) -> None:
    """Every machine's memory is some QEMU can set up here (no more than this machine's RAM and swap)."""
    for m in table.machines:
        if host is not None and m.memory_mib * MIB > host:
            raise HighbootError(f"{m.memory} is more than this machine's RAM and swap ({host >> 20} MiB): QEMU "
                                "cannot set up the guest's memory", file=file, field=m.field("memory"))


def _memory(value: Any, file: str, field: str) -> int:
    wanted = "a RAM size with a unit, such as \"256M\" or \"8G\" (64 MiB to 1 TiB, whole MiB)"
    if not isinstance(value, str):
        raise HighbootError(f"expected {wanted}, got {_kind(value)}", file=file, field=field)
    text = value.strip()
    try:
        size = parse_int(text)
    except ValueError:
        size = -1
    if not text or text[-1].isdigit() or size % MIB or not MIN_MEMORY <= size <= MAX_MEMORY:
        raise HighbootError(f"expected {wanted}, got {value!r}", file=file, field=field)
    return size // MIB


def _count(value: Any, low: int, high: int, what: str, file: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HighbootError(f"expected {what}, {low} to {high}, got {value!r}", file=file, field=field)
    return value

