"""What a build directory records of its own builds, so that no build trusts a stale view of it.

SCons keeps, per build directory here (``$BUILD_DIR/.sconsign.dblite``), the signatures of what
each target was built from, and writes them once, when the build ends. A build killed before that
(SIGKILL, a power cut) leaves targets newer than their records: had its inputs gone back to what the
records say, the next build would take those targets for up to date. So a build marks the
directory while it runs (``$BUILD_DIR/.highboot-building``) and unmarks it when SCons exits; a build
that finds the mark throws the records away and checks (and, where needed, redoes) every step.
Cargo's and the steps' own caches stay, so that costs seconds, not a cold build.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from highboot.errors import HighbootError

#: The mark of a build in progress, in the build directory.
IN_PROGRESS = ".highboot-building"
#: SCons's signature database, in the build directory (SConsignFile adds ".dblite").
SIGNATURES = ".sconsign"


def check_output_dirs(outputs: tuple[tuple[str, str], ...], source_dir: str) -> None:
    """BUILD_DIR and CARGO_DIR: plain names (cargo's build scripts speak a line protocol: a newline in
    a path could add directives) and never the source tree or a directory above it (`scons -c`
    deletes a build directory whole)."""
    source = os.path.realpath(source_dir)
    for option, directory in outputs:
        if any(ord(c) < 32 or ord(c) == 127 for c in directory):
            raise HighbootError(f"{ascii(directory)} has a control character (a newline?); choose a plain "
                                "directory name", field=option)
        if not directory:
            raise HighbootError("the directory is empty; expected a directory for the build's output", field=option)
        real = os.path.realpath(directory)
        if source == real or source.startswith(real.rstrip("/") + "/"):
            raise HighbootError(f"{directory!r} holds highboot's own sources ({source_dir}), which `scons -c` would "
                                "delete with the build; choose a directory of its own (default: build)",
                                field=option)


def start_build(build_dir: str, outputs: tuple[tuple[str, str], ...], source_dir: str, *, building: bool) -> bool:
    """Check the output directories; when this run builds (not -c, -h or -n), mark build_dir as being
    built until SCons exits. True when the last build there was killed part-way (its records were
    then thrown away, and every step is checked again)."""
    check_output_dirs(outputs, source_dir)
    if not building:
        return False
    mark = Path(build_dir, IN_PROGRESS)
    interrupted = mark.exists()
    if interrupted:
        print(f"highboot: the last build in {build_dir} was stopped part-way; checking every step again", flush=True)
        Path(build_dir, SIGNATURES + ".dblite").unlink(missing_ok=True)
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(f"{os.getpid()}\n")
    # SCons writes its records before it exits; a kill skips both, and the mark stays.
    atexit.register(_unmark, mark)
    return interrupted


def _unmark(mark: Path) -> None:
    mark.unlink(missing_ok=True)


def scratch_dir() -> str:
    """A directory removed when SCons exits (for records nobody needs again)."""
    path = tempfile.mkdtemp(prefix="highboot-scons-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
