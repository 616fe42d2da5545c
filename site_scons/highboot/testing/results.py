"""What a test of a kernel says: one line per boot as it finishes, a summary table at the end, and
a JUnit XML report (one testcase per boot) that CI systems read."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from highboot.rendering.templates import write_atomic
from highboot.testing.runner import Verdict, tail_bytes
from highboot.testing.table import Machine

#: Lines of a failed boot's serial log quoted in the JUnit report.
LOG_TAIL = 40
#: XML 1.0 has no place for most control characters (a kernel's serial output may hold them).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def line(v: Verdict) -> str:
    """One boot, as it finishes: PASS/FAIL, machine, boot number, seconds, why."""
    return (f"{'PASS' if v.passed else 'FAIL'}  {v.machine:<20} boot {v.number}/{v.boots}  {v.seconds:6.1f} s  "
            f"{v.why}" + (f"  [{v.log}]" if not v.passed else ""))


def summary(verdicts: Sequence[Verdict], machines: Sequence[Machine], shard: tuple[int, int] | None) -> str:
    """A table, one row per machine: what it is, its boots passed, the first failure's reason."""
    rows = [("machine", "cpu", "memory", "cpus", "passed", "first failure")]
    for m in machines:
        mine = [v for v in verdicts if v.machine == m.name]
        if not mine:
            continue
        failed = [v for v in mine if not v.passed]
        rows.append((m.name, m.cpu, m.memory, str(m.cpus), f"{len(mine) - len(failed)}/{len(mine)}",
                     f"boot {failed[0].number}: {failed[0].why}" if failed else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    out.insert(1, "-" * min(100, max(len(o) for o in out)))
    passed = sum(v.passed for v in verdicts)
    of = f" (slice {shard[0]} of {shard[1]})" if shard else ""
    if not verdicts:
        return f"no boots in this slice{of}: the table has fewer boots than slices"
    out.append(f"{passed} of {len(verdicts)} boots passed{of}" + ("" if passed == len(verdicts) else
                                                                 f"; {len(verdicts) - passed} FAILED"))
    return "\n".join(o.rstrip() for o in out)


def junit(verdicts: Sequence[Verdict], path: str | Path, *, suite: str) -> None:
    """The JUnit XML report: a testsuite of `suite`, a testcase per boot (classname: the machine);
    a failed one carries its reason and the tail of its serial log."""
    root = ET.Element("testsuites")
    failures = sum(not v.passed for v in verdicts)
    total = sum(v.seconds for v in verdicts)
    node = ET.SubElement(root, "testsuite", name=_xml(suite), tests=str(len(verdicts)), failures=str(failures),
                         errors="0", skipped="0", time=f"{total:.1f}")
    for v in verdicts:
        case = ET.SubElement(node, "testcase", classname=_xml(f"{suite}.{v.machine}"), name=v.boot,
                             time=f"{v.seconds:.1f}")
        if not v.passed:
            failure = ET.SubElement(case, "failure", message=_xml(v.why), type="boot")
            failure.text = _xml(_tail(v.log))
            if v.screenshot:
                shot = _xml(v.screenshot)
                ET.SubElement(case, "system-out").text = f"[[ATTACHMENT|{shot}]]\nscreenshot: {shot}"
    ET.indent(root)
    write_atomic(str(path), '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


def _tail(log: str) -> str:
    """The log's last LOG_TAIL lines (from its last 64 KiB)."""
    try:
        text = tail_bytes(log, 64 << 10).decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-LOG_TAIL:])


def _xml(text: str) -> str:
    return _NOT_XML.sub("?", text)


def result_file(results: str | Path, boot_name: str) -> Path:
    """Where a boot's verdict is kept (JSON) for the summary."""
    return Path(results, f"{boot_name}.json")


def junit_file(results: str | Path, shard: tuple[int, int] | None) -> Path:
    """junit.xml; a slice of the boots (TEST_SHARD=k/n) writes junit-k-of-n.xml, so the slices' reports
    can be gathered side by side."""
    return Path(results, "junit.xml" if shard is None else f"junit-{shard[0]}-of-{shard[1]}.xml")
