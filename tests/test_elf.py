"""Reading kernel ELFs: good ones give the right segments, bad ones one clear error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from elfgen import KBASE, PF_R, PF_W, PF_X, Elf, Seg, sample
from highboot.errors import HighbootError
from highboot.inputs.kernel import read_kernel


def write(tmp_path: Path, elf: Elf | bytes, name: str = "k.elf") -> Path:
    path = tmp_path / name
    path.write_bytes(elf if isinstance(elf, bytes) else elf.build())
    return path


def test_reads_segments_entry_and_digest(tmp_path: Path) -> None:
    path = write(tmp_path, sample())
    k = read_kernel(path)
    assert [(s.vaddr, s.memsz, int(s.flags)) for s in k.segments] == [
        (KBASE, 0x3000, PF_R | PF_X), (KBASE + 0x3000, 0x1000, PF_R), (KBASE + 0x4000, 0x6000, PF_R | PF_W)]
    assert k.entry == KBASE
    # The loader's digest, as fsverity-utils computes it.
    fsverity = subprocess.run(["fsverity", "digest", str(path)], capture_output=True, text=True, check=True)
    assert f"sha256:{k.digest}" == fsverity.stdout.split()[0]
    assert k.size == path.stat().st_size
    assert k.segments[2].filesz == 0x2000 and k.segments[2].memsz == 0x6000


def test_reads_the_built_sample_kernel(built: dict) -> None:
    k = read_kernel(built["kernel"])
    assert any(s.flags & PF_X for s in k.segments)
    assert not any(s.flags & PF_X and s.flags & PF_W for s in k.segments)
    assert built["plan"].placement.entry == k.entry


@pytest.mark.parametrize("mutate, message", [
    (lambda e: setattr(e, "ei_class", 1), "32-bit ELF"),
    (lambda e: setattr(e, "ei_data", 2), "big-endian"),
    (lambda e: setattr(e, "machine", 183), "expected EM_X86_64"),
    (lambda e: setattr(e, "etype", 1), "ET_REL"),
    (lambda e: setattr(e, "segments", []), "no program headers"),
    (lambda e: setattr(e, "entry", KBASE + 0x3000), "not inside an executable PT_LOAD"),
    (lambda e: e.segments.__setitem__(0, Seg(KBASE, 0x3000, PF_R | PF_W | PF_X, b"x")), "writable and executable"),
    (lambda e: e.segments.append(Seg(KBASE + 0x1000, 0x1000, PF_R, b"o")), "overlaps"),
    (lambda e: e.segments.append(Seg(KBASE + 0x100000, 1 << 40, PF_R | PF_W)), "not a plausible kernel size"),
    (lambda e: e.segments.append(Seg(KBASE + 0x100000, 0x10, PF_R, b"x" * 0x20)), "larger than p_memsz"),
    (lambda e: e.segments.append(Seg(KBASE + 0x100000, 0x1000, PF_R, b"", offset=1 << 30)), "past the end"),
])
def test_bad_elf(tmp_path: Path, mutate, message: str) -> None:
    elf = sample()
    mutate(elf)
    path = write(tmp_path, elf)
    with pytest.raises(HighbootError) as err:
        read_kernel(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_truncated_and_garbage(tmp_path: Path) -> None:
    good = sample().build()
    for name, data in {"empty": b"", "short": good[:40], "headers-cut": good[:100], "garbage": b"\x7fELF" + bytes(200),
                       "text": b"hello world\n" * 20}.items():
        path = write(tmp_path, data, name)
        with pytest.raises(HighbootError) as err:
            read_kernel(path)
        assert str(path) in str(err.value), name


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HighbootError, match="not found"):
        read_kernel(tmp_path / "nope.elf")
    with pytest.raises(HighbootError, match="directory"):
        read_kernel(tmp_path)


def test_shared_page_rules(tmp_path: Path) -> None:
    # R and RX on one page: allowed (the page becomes RX). RW and RX on one page: W+X, refused.
    ok = Elf([Seg(KBASE, 0x800, PF_R | PF_X, b"t" * 0x800), Seg(KBASE + 0x800, 0x800, PF_R, b"r" * 0x800)], KBASE)
    assert len(read_kernel(write(tmp_path, ok, "ok")).segments) == 2
    bad = Elf([Seg(KBASE, 0x800, PF_R | PF_X, b"t" * 0x800), Seg(KBASE + 0x800, 0x800, PF_R | PF_W, b"")], KBASE)
    with pytest.raises(HighbootError, match="share the page"):
        read_kernel(write(tmp_path, bad, "bad"))
