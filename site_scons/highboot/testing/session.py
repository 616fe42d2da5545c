"""`scons test` of a project's kernel, as the build runs it: each boot on its own (side by side with
scons -j N), then the summary over them all."""

from __future__ import annotations

from pathlib import Path

from highboot.rendering.templates import write_atomic
from highboot.testing import results as report
from highboot.testing.runner import RESULT_SUFFIXES, Verdict, run_boot
from highboot.testing.table import Boot, TestTable, boots


def prepare_results(results: str | Path, table: TestTable, shard: tuple[int, int] | None) -> None:
    """Before the boots: what an earlier run left that this one would not replace goes (the files of
    boots the table no longer has, this run's JUnit report), so nothing stale is read as this run's.
    Another slice's files stay: slices may share a directory."""
    results = Path(results)
    if not results.is_dir():
        return
    names = {b.name for b in boots(table)}
    report.junit_file(results, shard).unlink(missing_ok=True)
    for path in results.iterdir():
        boot = next((path.name[:-len(s)] for s in RESULT_SUFFIXES if path.name.endswith(s)), None)
        if path.is_file() and boot is not None and boot not in names:
            path.unlink()


def boot_and_record(esp: str, boot: Boot, table: TestTable, results: str | Path,
                    secure_vars: str | None = None) -> Verdict:
    """Boot once, keep the verdict for the summary and say it in one line."""
    verdict = run_boot(esp, boot, table, results, secure_vars=secure_vars)
    write_atomic(report.result_file(results, boot.name), verdict.to_json())
    print(report.line(verdict), flush=True)
    return verdict


def summarize(boots: list[Boot], table: TestTable, results: str | Path, shard: tuple[int, int] | None,
              suite: str) -> bool:
    """The summary table and the JUnit report of these boots; True when every one passed."""
    verdicts = [Verdict.from_json(report.result_file(results, b.name).read_text()) for b in boots]
    junit = report.junit_file(results, shard)
    report.junit(verdicts, junit, suite=suite)
    print("\n" + report.summary(verdicts, table.machines, shard), flush=True)
    print(f"serial logs in {Path(results)}/, the JUnit report {junit}", flush=True)
    return all(v.passed for v in verdicts)
