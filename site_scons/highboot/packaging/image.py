"""A reproducible GPT disk image holding one EFI System Partition (FAT32) with an ESP directory.

The image is made with the real tools: `sfdisk` (fdisk) writes the GPT, `mkfs.fat` (dosfstools)
makes the FAT32 file system in a separate file, `mcopy` (mtools) fills it, and Python copies it into
the partition. Everything that would vary between builds is fixed:

- the disk GUID and the partition's unique GUID are uuid5s of a SHA-256 over the inputs (every
  file's path and content, the image size, the timestamp), or of `seed` when one is given;
- the FAT volume id is the first 32 bits of the same hash; `mkfs.fat --invariant` fixes the
  boot-sector and label timestamps (it must come before `-i`, which it would otherwise reset);
- files and directories are staged with one fixed mtime (SOURCE_DATE_EPOCH, or 2000-01-01 UTC)
  and copied with `mcopy -m` under TZ=UTC, directories as empty staged directories (`mmd` would
  stamp them with the current time), one directory at a time in sorted order (never in the
  order the host file system happens to list them).

Usable with dd on real hardware and as a plain raw disk under QEMU.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from highboot.errors import HighbootError

SECTOR = 512
MIB = 1 << 20
ALIGN_LBA = MIB // SECTOR  # partitions start on 1 MiB boundaries
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ESP_NAME = "EFI System"
LABEL = "HIGHBOOT"
DEFAULT_MIB = 64
# FAT32 with 512-byte clusters needs 65,525 clusters plus its FATs: a partition of >= 33 MiB,
# and the GPT takes 1 MiB in front and 1 MiB (aligned) behind.
MIN_MIB = 35
DEFAULT_EPOCH = 946684800  # 2000-01-01 00:00:00 UTC
# Namespace of the uuid5s for disk and partition GUIDs (itself uuid5(NAMESPACE_URL, project URL)).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://highboot.invalid/gpt-image")
TOOLS = {"sfdisk": "fdisk", "mkfs.fat": "dosfstools", "mcopy": "mtools", "mdir": "mtools"}
INSTALL = "apt-get install mtools dosfstools fdisk"
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_tool(name: str) -> str:
    """The tool's path (also looking in sbin, often not on a user's PATH), or a HighbootError."""
    path = os.environ.get("PATH", os.defpath) + os.pathsep + os.pathsep.join(SBIN)
    found = shutil.which(name, path=path)
    if not found:
        raise HighbootError(f"{name} not found (Debian package {TOOLS.get(name, name)}); "
                            f"install the image tools with: {INSTALL}", field="image")
    return found


def _source_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return DEFAULT_EPOCH
    try:
        epoch = int(value)
    except ValueError:
        raise HighbootError(f"SOURCE_DATE_EPOCH={value!r} is not an integer", field="image") from None
    # FAT dates run from 1980 to 2107; clamp into that range rather than let mtools wrap.
    return min(max(epoch, 315532800), 4354819199)


def _scan(esp: Path) -> tuple[list[Path], list[Path]]:
    """The ESP's directories and files (relative, sorted); refuses what FAT cannot hold as is."""
    dirs: list[Path] = []
    files: list[Path] = []
    for root, dirnames, filenames in os.walk(esp, followlinks=False):
        dirnames.sort()
        rel_root = Path(root).relative_to(esp)
        seen: dict[str, str] = {}
        for name in sorted(dirnames + filenames):
            key = name.upper()
            if key in seen:
                raise HighbootError(f"{seen[key]!r} and {name!r} are the same name on FAT (case-insensitive)",
                                    file=esp / rel_root, field="image")
            seen[key] = name
        for name in list(dirnames):
            full = Path(root, name)
            if full.is_symlink():
                raise HighbootError("symbolic links to directories are not copied into the image",
                                    file=full, field="image")
            dirs.append(rel_root / name)
        for name in filenames:
            full = Path(root, name)
            if not full.is_file():
                raise HighbootError("not a regular file; cannot go into the image", file=full, field="image")
            files.append(rel_root / name)
    return sorted(dirs, key=lambda p: p.parts), sorted(files, key=lambda p: p.parts)


def _digest(esp: Path, dirs: list[Path], files: list[Path], size_mib: int | None, epoch: int) -> bytes:
    h = hashlib.sha256(b"highboot-gpt-image-v1\0")
    h.update(f"size={size_mib}\0epoch={epoch}\0".encode())
    for d in dirs:
        h.update(b"D\0" + d.as_posix().encode() + b"\0")
    for f in files:
        with open(esp / f, "rb") as data:  # read in pieces: a module may be larger than memory likes
            h.update(b"F\0" + f.as_posix().encode() + b"\0" + struct.pack("<Q", os.fstat(data.fileno()).st_size))
            while piece := data.read(MIB):
                h.update(piece)
    return h.digest()


def _run(cmd: list[str], *, stdin: str | None = None, env: dict[str, str] | None = None) -> None:
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=600,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HighbootError(f"{Path(cmd[0]).name} did not finish within 600 s", field="image") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}")
        raise HighbootError(f"{Path(cmd[0]).name} failed: {detail}\n  command: {' '.join(cmd)}", field="image")


def _tool_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MTOOLS")}
    env.update(TZ="UTC", LC_ALL="C", MTOOLS_SKIP_CHECK="1", MTOOLSRC=os.devnull)
    return env


def build_image(esp_dir: str | Path, out: str | Path, *, seed: str | None = None,
                size_mib: int | None = None) -> None:
    """Write a GPT disk image `out` with one FAT32 EFI System Partition holding the tree esp_dir.

    Byte-identical for identical inputs. seed replaces the content hash as the source of the disk
    GUID, partition GUID and volume id. size_mib: the whole image (default max(64 MiB, twice the
    content plus the GPT)).

    All or nothing: everything is written in a work directory beside `out` (.NAME.tmp-*), the
    image synced to disk and only then renamed over `out`, so `out` is at every instant the old
    file (or none) or a complete new image, even when the build is killed (SIGKILL). A build that
    fails removes its work directory; one that was killed leaves it, and the next build of `out`
    removes it (under a lock on the directory, so never a live build's).
    """
    esp, out = Path(esp_dir), Path(out)
    if not esp.is_dir():
        raise HighbootError("ESP directory not found", file=esp, field="image")
    tools = {name: find_tool(name) for name in TOOLS}
    epoch = _source_epoch()
    dirs, files = _scan(esp)
    content = sum((esp / f).stat().st_size for f in files)
    if size_mib is None:
        size_mib = max(DEFAULT_MIB, -(-2 * content // MIB) + 2)
    elif size_mib < MIN_MIB:
        raise HighbootError(f"size {size_mib} MiB is too small: FAT32 needs an image of at least {MIN_MIB} MiB",
                            field="image")
    digest = (hashlib.sha256(b"highboot-seed\0" + seed.encode()).digest() if seed is not None
              else _digest(esp, dirs, files, size_mib, epoch))
    disk_guid = uuid.uuid5(NAMESPACE, "disk:" + digest.hex())
    part_guid = uuid.uuid5(NAMESPACE, "partition:" + digest.hex())
    volume_id = digest[:4].hex()

    total_lba = size_mib * MIB // SECTOR
    start_lba = ALIGN_LBA
    part_lba = total_lba - 2 * ALIGN_LBA  # ends on the last 1 MiB boundary before the backup GPT
    env = _tool_env()

    out.parent.mkdir(parents=True, exist_ok=True)
    with _replacing(out) as work:
        tmp_image = work / "disk.img"
        # 1. The disk: zeros (sparse), then the GPT and protective MBR from sfdisk.
        with open(tmp_image, "wb") as f:
            f.truncate(total_lba * SECTOR)
        script = (f"label: gpt\nlabel-id: {str(disk_guid).upper()}\nunit: sectors\nsector-size: {SECTOR}\n\n"
                  f"start={start_lba}, size={part_lba}, type={ESP_TYPE}, uuid={str(part_guid).upper()}, "
                  f'name="{ESP_NAME}"\n')
        _run([tools["sfdisk"], "--quiet", "--no-reread", "--no-tell-kernel", "--lock=no", str(tmp_image)],
             stdin=script, env=env)
        # 2. The file system, in its own file. --invariant first: it resets the volume id.
        fat = work / "esp.fat"
        with open(fat, "wb") as f:
            f.truncate(part_lba * SECTOR)
        _run([tools["mkfs.fat"], "--invariant", "-F", "32", "-S", str(SECTOR), "-i", volume_id,
              "-n", LABEL, "-h", str(start_lba), str(fat)], env=env)
        _fill(tools["mcopy"], fat, esp, dirs, files, work / "stage", epoch, env)
        _verify_listing(tools["mdir"], fat, dirs, files, env)
        # 3. The file system into the partition (zero blocks skipped: the disk is sparse zeros).
        _copy_into(fat, tmp_image, start_lba * SECTOR)
        os.chmod(tmp_image, 0o644)
        # On disk before its name is: a crash after the rename never finds a name on missing data.
        with open(tmp_image, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_image, out)
        _sync_directory(out.parent)


#: What a build of NAME writes beside it before the rename: .NAME.tmp-XXXXXXXX/ (its work directory).
WORK_INFIX = ".tmp-"


@contextlib.contextmanager
def _replacing(out: Path) -> Iterator[Path]:
    """A fresh work directory beside `out`, removed afterwards whatever happens; while it exists,
    an exclusive lock on out's directory, under which what killed builds of `out` left is removed
    first (a live build holds the lock, so what is left without one is a dead build's)."""
    directory = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # Released by the kernel when the process ends, however it ends (a SIGKILL included).
        fcntl.flock(directory, fcntl.LOCK_EX)
        _remove_leftovers(out)
        work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{WORK_INFIX}"))
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        os.close(directory)  # and with it the lock


def _remove_leftovers(out: Path) -> list[Path]:
    """Remove the work directories (and files) that builds of `out` left beside it; return them.
    Only under the lock: a build of `out` still running holds it."""
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for entry in out.parent.iterdir():
        if entry.name.startswith(f".{out.name}{WORK_INFIX}"):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fill(mcopy: str, fat: Path, esp: Path, dirs: list[Path], files: list[Path], stage: Path, epoch: int,
          env: dict[str, str]) -> None:
    """Copy the tree into the FAT image with mcopy -m, every entry stamped with `epoch`.

    One mcopy per directory, parents first, entries in sorted order: a directory goes in as an
    empty staged directory of that name (mcopy -s -m keeps its mtime), a file as a staged copy.
    """
    children: dict[Path, list[tuple[str, bool]]] = {Path("."): []}
    for d in dirs:
        children.setdefault(d, [])
        children.setdefault(d.parent, []).append((d.name, True))
    for f in files:
        children.setdefault(f.parent, []).append((f.name, False))
    stamped: list[Path] = []
    calls: list[list[str]] = []
    for index, parent in enumerate(sorted(children, key=lambda p: (len(p.parts), p.parts))):
        entries = sorted(children[parent])
        if not entries:
            continue
        holder = stage / str(index)
        holder.mkdir(parents=True)
        sources: list[str] = []
        for name, is_dir in entries:
            staged = holder / name
            if is_dir:
                staged.mkdir()
            else:
                shutil.copyfile(esp / parent / name, staged)
                os.chmod(staged, 0o644)  # a read-only source would become a read-only FAT file
            stamped.append(staged)
            sources.append(str(staged))
        target = "::/" + ("" if parent == Path(".") else parent.as_posix() + "/")
        calls.append([mcopy, "-i", str(fat), "-s", "-m", "-Q", "-D", "s", *sources, target])
    for path in stamped:
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    for cmd in calls:
        _run(cmd, env=env)


def _verify_listing(mdir: str, fat: Path, dirs: list[Path], files: list[Path], env: dict[str, str]) -> None:
    """mtools' own recursive listing must be exactly the tree: nothing renamed, skipped or mangled."""
    if not dirs and not files:
        return
    proc = subprocess.run([mdir, "-i", str(fat), "-/", "-b", "::/"], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=600)
    if proc.returncode != 0:
        raise HighbootError(f"mdir failed on the new file system: {proc.stderr.strip()}", field="image")
    listed = {line.strip().removeprefix("::/").rstrip("/") for line in proc.stdout.splitlines() if line.strip()}
    expected = {p.as_posix() for p in dirs + files}
    if listed != expected:
        missing, extra = sorted(expected - listed), sorted(listed - expected)
        raise HighbootError(f"the FAT file system does not hold the ESP as is: missing {missing}, unexpected {extra}",
                            field="image")


def _copy_into(src: Path, dst: Path, offset: int, chunk: int = MIB) -> None:
    zero = bytes(chunk)
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        pos = offset
        while block := fin.read(chunk):
            if block != zero[:len(block)]:
                fout.seek(pos)
                fout.write(block)
            pos += len(block)


# ---------------------------------------------------------------------------------------------
# Checking an image: protective MBR, both GPT headers, both partition arrays, the ESP entry.

_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")  # the 92 bytes of a GPT header
_ENTRY = struct.Struct("<16s16sQQQ72s")


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw)).upper()


def _read_header(img: Any, lba: int, path: Path) -> tuple[tuple[Any, ...], bytes]:
    img.seek(lba * SECTOR)
    sector = img.read(SECTOR)
    if len(sector) != SECTOR:
        raise HighbootError(f"truncated: no sector at LBA {lba}", file=path, field="gpt")
    fields = _HEADER.unpack_from(sector)
    signature, _revision, header_size, header_crc = fields[:4]
    which = "primary" if lba == 1 else f"backup (LBA {lba})"
    if signature != b"EFI PART":
        raise HighbootError(f"{which} GPT header: signature {signature!r}, expected b'EFI PART'", file=path,
                            field="gpt")
    if not 92 <= header_size <= SECTOR:
        raise HighbootError(f"{which} GPT header: header size {header_size}", file=path, field="gpt")
    raw = bytearray(sector[:header_size])
    raw[16:20] = b"\0\0\0\0"
    if zlib.crc32(raw) != header_crc:
        raise HighbootError(f"{which} GPT header: CRC32 {header_crc:#010x}, computed {zlib.crc32(raw):#010x}",
                            file=path, field="gpt")
    if fields[5] != lba:
        raise HighbootError(f"{which} GPT header: MyLBA {fields[5]}, expected {lba}", file=path, field="gpt")
    entries_lba, count, entry_size, array_crc = fields[10:14]
    if entry_size < _ENTRY.size or entry_size % 8 or count == 0 or count * entry_size > 1 << 20:
        raise HighbootError(f"{which} GPT header: {count} entries of {entry_size} bytes", file=path, field="gpt")
    img.seek(entries_lba * SECTOR)
    array = img.read(count * entry_size)
    if len(array) != count * entry_size or zlib.crc32(array) != array_crc:
        raise HighbootError(f"{which} GPT partition array at LBA {entries_lba}: CRC32 mismatch", file=path,
                            field="gpt")
    return fields, array


def check_gpt(path: str | Path) -> dict[str, Any]:
    """Verify a GPT disk image and return its EFI System Partition entry.

    Checks the protective MBR (type 0xEE in entry 0, 0x55AA), the primary header at LBA 1 and the
    backup header at the last LBA (signature, header CRC32, MyLBA/AlternateLBA, partition-array
    CRC32, the same disk GUID and array), and that exactly one entry has the ESP type GUID.
    Returns type_guid, partition_guid, disk_guid, first_lba, last_lba, name, attributes and the
    partition's byte offset and size. Raises HighbootError on any mismatch.
    """
    path = Path(path)
    size = path.stat().st_size
    if size % SECTOR or size < 68 * SECTOR:
        raise HighbootError(f"size {size} is not a whole number of sectors holding a GPT", file=path, field="gpt")
    last_lba = size // SECTOR - 1
    with open(path, "rb") as img:
        mbr = img.read(SECTOR)
        if mbr[510:512] != b"\x55\xaa":
            raise HighbootError(f"protective MBR: signature {mbr[510:512].hex()}, expected 55aa", file=path,
                                field="gpt")
        if mbr[446 + 4] != 0xEE:
            raise HighbootError(f"protective MBR: entry 0 type {mbr[446 + 4]:#04x}, expected 0xee", file=path,
                                field="gpt")
        if struct.unpack_from("<I", mbr, 446 + 8)[0] != 1:
            raise HighbootError("protective MBR: entry 0 does not start at LBA 1", file=path, field="gpt")
        primary, array = _read_header(img, 1, path)
        if primary[6] != last_lba:
            raise HighbootError(f"primary GPT header: AlternateLBA {primary[6]}, expected the last LBA {last_lba}",
                                file=path, field="gpt")
        backup, backup_array = _read_header(img, last_lba, path)
    if backup[6] != 1:
        raise HighbootError(f"backup GPT header: AlternateLBA {backup[6]}, expected 1", file=path, field="gpt")
    first_usable, last_usable, disk_guid = primary[7], primary[8], primary[9]
    if (backup[7], backup[8], backup[9]) != (first_usable, last_usable, disk_guid) or backup_array != array:
        raise HighbootError("backup GPT header or partition array differs from the primary", file=path,
                            field="gpt")
    if not primary[10] + len(array) // SECTOR <= first_usable <= last_usable < backup[10]:
        raise HighbootError(f"GPT usable range {first_usable}..{last_usable} overlaps the GPT", file=path,
                            field="gpt")
    entry_size = primary[12]
    found: list[dict[str, Any]] = []
    for i in range(primary[11]):
        type_raw, unique, first, last, attributes, name_raw = _ENTRY.unpack_from(array, i * entry_size)
        if type_raw == bytes(16):
            continue
        if not first_usable <= first <= last <= last_usable:
            raise HighbootError(f"partition {i + 1}: LBA {first}..{last} outside the usable range "
                                f"{first_usable}..{last_usable}", file=path, field="gpt")
        if _guid(type_raw) == ESP_TYPE:
            found.append({
                "index": i + 1, "type_guid": _guid(type_raw), "partition_guid": _guid(unique),
                "disk_guid": _guid(disk_guid), "first_lba": first, "last_lba": last,
                "name": name_raw.decode("utf-16-le").split("\0", 1)[0], "attributes": attributes,
                "offset": first * SECTOR, "size": (last - first + 1) * SECTOR,
            })
    if len(found) != 1:
        raise HighbootError(f"{len(found)} EFI System Partitions (type {ESP_TYPE}), expected 1", file=path,
                            field="gpt")
    return found[0]
