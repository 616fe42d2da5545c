"""SCons tool for builds that make a test kernel (the sample kernel, the C test kernels, the
toolchain-shaped kernels): renders the tests' report files they print with (testkit.report) through
the product's render builder. SConstruct loads it only for those builds; the product's own tool
(site_scons/site_tools/highboot_tool.py) never imports testkit, it asks for the files by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from testkit import report

#: The test renders' generator: testkit (the product's render builder adds highboot's own files).
PACKAGE_DIR = Path(report.__file__).resolve().parent


def _report_files(env: Any, out: str) -> list[Any]:
    """gen/report.rs (the sample kernel includes it) and include/highboot_report.h (C test kernels) under out."""
    deps = [env.File(str(p)) for p in sorted(PACKAGE_DIR.rglob("*.py"))]
    test = {"RENDER_CONTEXT": report.context, "RENDER_DEPS": deps}
    return (env.HighbootRender(f"{out}/gen/report.rs", [], TEMPLATE="test/report.rs.j2", **test)
            + env.HighbootRender(f"{out}/include/highboot_report.h", [], TEMPLATE="test/highboot_report.h.j2",
                                 **test))


def generate(env: Any) -> None:
    env.AddMethod(_report_files, "HighbootTestReport")


def exists(env: Any) -> bool:
    return True
