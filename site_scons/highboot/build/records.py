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
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from highboot.errors import HighbootError

#: The mark of a build in progress, in the build directory.
IN_PROGRESS = ".highboot-building"
#: SCons's signature database, in the build directory (SConsignFile adds ".dblite").
SIGNATURES = ".sconsign"
#: Marks a directory as a highboot build directory (so `scons -c` may delete it whole).
OWNED = ".highboot-build"
#: Held (flock) by the one scons that builds in a build directory, while it runs.
LOCK = ".highboot-lock"

_held: list[int] = []  # the lock's descriptor, open until the process ends


def canonical(directory: str) -> str:
    """The build directory as SCons must name it: its real path when a symbolic link leads to it
    (records kept under two names of one directory would each believe their own, stale, view)."""
    return os.path.realpath(directory) if os.path.realpath(directory) != os.path.abspath(directory) else directory


def check_output_dirs(outputs: tuple[tuple[str, str], ...], source_dir: str, *, owned: bool = True) -> None:
    """BUILD_DIR and CARGO_DIR: plain names (cargo's build scripts speak a line protocol: a newline in
    a path could add directives; SCons expands $ in a target's name), directories (or not there yet),
    never the source tree or a directory above it; and BUILD_DIR, which `scons -c` deletes whole, a
    directory of highboot's own: new, empty, or one a build made."""
    source = os.path.realpath(source_dir)
    for option, directory in outputs:
        if any(ord(c) < 32 or ord(c) == 127 for c in directory):
            raise HighbootError(f"{ascii(directory)} has a control character (a newline?); choose a plain "
                                "directory name", field=option)
        if not directory:
            raise HighbootError("the directory is empty; expected a directory for the build's output", field=option)
        if "$" in directory:
            raise HighbootError(f"{directory!r} has a '$', which SCons expands in the names of what it builds; "
                                "choose a directory name without one", field=option)
        real = os.path.realpath(directory)
        if source == real or source.startswith(real.rstrip("/") + "/"):
            raise HighbootError(f"{directory!r} holds highboot's own sources ({source_dir}), which `scons -c` would "
                                "delete with the build; choose a directory of its own (default: build)",
                                field=option)
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise HighbootError(f"{directory!r} is not a directory; expected a directory for the build's output",
                                field=option)
        if owned and option == "BUILD_DIR" and os.path.isdir(directory) and not _ours(directory):
            raise HighbootError(f"{directory!r} holds files that no highboot build made, and `scons -c` deletes "
                                "a build directory whole; choose a new or empty directory", field=option)


def _ours(directory: str) -> bool:
    """Empty, marked by a build, or holding only what builds make there."""
    try:
        names = set(os.listdir(directory))
    except OSError:
        return False
    return bool(names & {OWNED, "plan.json"}) or names <= _KNOWN


def start_build(build_dir: str, outputs: tuple[tuple[str, str], ...], source_dir: str, *, building: bool,
                cleaning: bool = False) -> bool:
    """Check the output directories; when this run builds or cleans, take the build directory for
    this process alone (another scons there is refused: two would each write back their own
    records); when it builds, mark it as being built until SCons exits. True when the last build
    there was killed part-way (its records were then thrown away, and every step is checked again)."""
    check_output_dirs(outputs, source_dir, owned=building or cleaning)
    if not building and not cleaning:
        return False
    try:
        Path(build_dir).mkdir(parents=True, exist_ok=True)
        _lock(build_dir)
        Path(build_dir, OWNED).touch()
    except OSError as exc:
        raise HighbootError(f"cannot use {build_dir!r}: {exc.strerror}", field="BUILD_DIR") from None
    if not building:
        return False
    _clear_the_way(build_dir)
    mark = Path(build_dir, IN_PROGRESS)
    interrupted = mark.exists()
    if interrupted:
        print(f"highboot: the last build in {build_dir} was stopped part-way; checking every step again", flush=True)
        Path(build_dir, SIGNATURES + ".dblite").unlink(missing_ok=True)
    mark.write_text(f"{os.getpid()}\n")
    # SCons writes its records before it exits; a kill skips both, and the mark stays.
    atexit.register(_unmark, mark)
    return interrupted


#: What a build makes in its directory: True for a directory, False for a file.
_MADE = {"esp": True, "gen": True, "loader": True, "kernel": True, "include": True,
         "plan.json": False, "highboot.img": False, "map.txt": False, "map.svg": False}
#: Every name a build (or a test's shared cargo cache) puts in a build directory.
_KNOWN = {*_MADE, "cargo", "test", "run.img", "debug.gdb", "secure-vars.fd", SIGNATURES + ".dblite", OWNED, LOCK,
          IN_PROGRESS, ".esp.new"}


def _clear_the_way(build_dir: str) -> None:
    """Whatever stands where the build puts a directory or a file of the other kind (the build
    directory is highboot's own) goes first: SCons cannot build a file where a directory is."""
    for name, directory in _MADE.items():
        path = Path(build_dir, name)
        if path.is_symlink() or (path.exists() and path.is_dir() != directory):
            remove(path)


def remove(path: Path) -> None:
    """Whatever is at path, gone: a directory with its contents; a file, link or special file itself
    (a link's target stays)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _lock(build_dir: str) -> None:
    fd = os.open(Path(build_dir, LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise HighbootError(f"another scons (pid {holder}) is using {build_dir!r}: wait for it to end (`scons run` "
                            "and `scons debug` hold it while QEMU runs), or build in another directory",
                            field="BUILD_DIR") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held.append(fd)


def _unmark(mark: Path) -> None:
    mark.unlink(missing_ok=True)


def scratch_dir() -> str:
    """A directory removed when SCons exits (for records nobody needs again)."""
    path = tempfile.mkdtemp(prefix="highboot-scons-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
