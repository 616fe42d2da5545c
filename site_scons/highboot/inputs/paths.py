"""Every file a user names is checked here, and every reader of one reads through here.

A path must be a regular file (or a directory where a directory is meant), readable, within a size
that fits its kind, and not something a build writes (a file under BUILD_DIR or CARGO_DIR: naming
one makes the build read its own output, and `scons -c` deletes it). Files are opened without
blocking and checked on the open descriptor, so a device, a FIFO or a socket, even one swapped in
after a look at the path, ends in a refusal instead of a hang or a read that never ends.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from highboot.errors import HighbootError
from highboot.units import format_size

#: FAT32's limit on one file: the ESP must hold the kernel and each module.
MAX_FAT32_FILE = (1 << 32) - 1


@dataclass(frozen=True)
class InputKind:
    """What a file is for: the word a refusal uses, and the largest size that makes sense for it."""

    what: str
    limit: int


KERNEL = InputKind("kernel file", MAX_FAT32_FILE)
MODULE = InputKind("module file", MAX_FAT32_FILE)
LAYOUT = InputKind("layout file", 1 << 20)
PROJECT = InputKind("project file", 16 << 20)  # modules' command lines: up to 1 MiB
TEMPLATE = InputKind("template", 4 << 20)
KEY = InputKind("key file", 1 << 20)


class _Where:
    """How a refusal names a path: by the option or project-file field that gave it (the path in the
    message), or, for a reader given no field, by the path itself."""

    def __init__(self, path: str | Path, kind: InputKind, file: str | Path | None, field: str | None) -> None:
        self.text = str(path)
        self.file = file if field is not None else path
        self.field = field
        self.subject = f"{kind.what} {self.text!r}" if field is not None else kind.what
        self.kind = kind

    def refuse(self, problem: str) -> HighbootError:
        return HighbootError(f"{self.subject} {problem}", file=self.file, field=self.field)


def _open(where: _Where) -> int:
    """An open descriptor of a regular, readable file of at most kind.limit bytes."""
    kind = where.kind
    if not where.text:
        raise HighbootError(f"the path is empty; expected a {kind.what}", file=where.file, field=where.field)
    if "\0" in where.text:
        raise HighbootError(f"the path {where.text!r} has a NUL byte", file=where.file, field=where.field)
    try:
        fd = os.open(where.text, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise where.refuse("not found") from None
    except IsADirectoryError:
        raise where.refuse(f"is a directory; expected a {kind.what}") from None
    except OSError as exc:
        raise where.refuse(f"cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise where.refuse(f"is a directory; expected a {kind.what}")
        if not stat.S_ISREG(st.st_mode):
            raise where.refuse(f"is {_file_type(st.st_mode)}, not a regular file")
        if st.st_size > kind.limit:
            raise where.refuse(f"is {st.st_size} bytes ({format_size(st.st_size)}); a {kind.what} is at most "
                               f"{kind.limit} bytes ({format_size(kind.limit)})")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_file(path: str | Path, kind: InputKind, *, file: str | Path | None = None, field: str | None = None) -> int:
    """A regular, readable file of a sensible size: its size (HighbootError naming file/field if not)."""
    where = _Where(path, kind, file, field)
    fd = _open(where)
    try:
        size = os.fstat(fd).st_size
        os.read(fd, 1)  # readable: found now, not halfway through a build
    except OSError as exc:
        raise where.refuse(f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    return size


def open_file(path: str | Path, kind: InputKind, *, file: str | Path | None = None,
              field: str | None = None) -> BinaryIO:
    """The file, open for reading after check_file's checks on its own descriptor (to stream it)."""
    fd = _open(_Where(path, kind, file, field))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_file(path: str | Path, kind: InputKind, *, file: str | Path | None = None, field: str | None = None) -> bytes:
    """The whole file, read through check_file's checks on one descriptor, never more than kind.limit
    bytes (a file that grows while it is read is refused, not read on and on)."""
    where = _Where(path, kind, file, field)
    fd = _open(where)
    try:
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(os.fstat(fd).st_size)  # one buffer of the file's size (a large kernel is not held twice)
            # More than its size said (a file that grew, or a /proc file whose size is 0): in pieces, bounded.
            while len(data) <= kind.limit and (more := f.read(min(1 << 20, kind.limit + 1 - len(data)))):
                data += more
    except OSError as exc:
        raise where.refuse(f"cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > kind.limit:
        raise where.refuse(f"grew past {kind.limit} bytes while it was read; a {kind.what} is at most "
                           f"{format_size(kind.limit)}")
    return data


def read_text(path: str | Path, kind: InputKind, *, file: str | Path | None = None, field: str | None = None) -> str:
    data = read_file(path, kind, file=file, field=field)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Where(path, kind, file, field).refuse(f"is not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def check_directory(path: str | Path, what: str, *, file: str | Path | None = None,
                    field: str | None = None) -> None:
    where = _Where(path, InputKind(what, 0), file, field)
    if not where.text:
        raise HighbootError(f"the path is empty; expected a {what}", file=where.file, field=where.field)
    if not os.path.isdir(where.text):
        raise where.refuse("not found" if not os.path.lexists(where.text) else "is not a directory")


def check_not_output(path: str | Path, outputs: Iterable[tuple[str, str | Path]], *,
                     file: str | Path | None = None, field: str | None = None) -> None:
    """path (after symbolic links) is not inside any of outputs: (option, directory) pairs, such as
    ("BUILD_DIR", "build"). A build that read its own output would depend on itself."""
    real = os.path.realpath(path)
    for option, directory in outputs:
        top = os.path.realpath(directory)
        if real == top or real.startswith(top.rstrip("/") + "/") or _same_dir_above(real, top):
            raise HighbootError(f"{str(path)!r} is inside {option} ({directory}), where the build writes its own "
                                f"output (and `scons -c` deletes it); name a file outside it", file=file,
                                field=field)


def _same_dir_above(path: str, directory: str) -> bool:
    """A directory above path is `directory` itself, reached another way (a bind mount): compared by
    device and inode, which no spelling of a path changes."""
    try:
        target = os.stat(directory)
    except OSError:
        return False
    parent = os.path.dirname(path)
    while True:
        try:
            st = os.stat(parent)
        except OSError:
            return False
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            return True
        if parent == os.path.dirname(parent):
            return False
        parent = os.path.dirname(parent)
