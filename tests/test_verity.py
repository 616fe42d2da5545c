"""The digest the build bakes in and the loader checks (fs-verity's, loader/src/verity.rs): every
hashing engine (scalar, SSE2 4 lanes, AVX2 8 lanes, SHA-NI) compiled for this machine and run on
edge sizes, against `fsverity digest` (fsverity-utils) and highboot.fsverity. The engines the boots
use are checked in real boots too (test_boot: SSE2 on -cpu qemu64, AVX2 on -cpu max)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from highboot.inputs import fsverity

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("scalar", "sse2", "avx2", "sha_ni")
MIB = 1 << 20
# Around the block and tree-level boundaries: 128 hashes fill a level-1 block.
SIZES = (0, 1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, MIB + 1, 300 * MIB)



@pytest.fixture(scope="module")
def hasher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The loader's digest code built for this machine (optimised, as in the loader), driven by
    tools/bench's hosted benchmark program: it prints each engine's digest of a file."""
    d = tmp_path_factory.mktemp("verity")
    for name in ("sha256.rs", "verity.rs"):
        shutil.copy(ROOT / "loader" / "src" / name, d / name)
    shutil.copy(ROOT / "tools" / "benchkit" / "hashbench.rs", d / "main.rs")
    rustc = shutil.which("rustc")
    assert rustc, "no rustc on PATH"
    out = subprocess.run([rustc, "--edition", "2021", "-C", "opt-level=3", "-o", str(d / "hasher"),
                          str(d / "main.rs")], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return d / "hasher"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    d = tmp_path_factory.mktemp("data")
    rng = random.Random(17)
    out = {}
    for size in SIZES:
        path = d / f"{size}.bin"
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, 8 * MIB)
                f.write(rng.randbytes(n))
                left -= n
        out[size] = path
    return out


def fsverity_utils(path: Path) -> str:
    tool = shutil.which("fsverity")
    assert tool, "fsverity not found: `tools/setup --test` installs it (Debian package fsverity)"
    out = subprocess.run([tool, "digest", str(path)], capture_output=True, text=True, check=True, timeout=600)
    algorithm, _, digest = out.stdout.split()[0].partition(":")
    assert algorithm == "sha256"
    return digest


def digests(hasher: Path, path: Path) -> dict[str, str]:
    """Each engine's digest of the file (one run each)."""
    out = subprocess.run([str(hasher), str(path), "1"], capture_output=True, text=True, timeout=600, check=True)
    found = {}
    for line in out.stdout.splitlines():
        engine, *rest = line.split()
        assert rest != ["unsupported"], f"this CPU has no {engine}: it cannot be tested here"
        assert rest[2] == rest[1], f"{engine}: fed in pieces, {rest[2]}; at once, {rest[1]}"
        found[engine] = rest[1]
    assert sorted(found) == sorted(ENGINES), found
    return found


@pytest.mark.parametrize("size", SIZES)
def test_every_engine_matches_fsverity(hasher: Path, files: dict[int, Path], size: int) -> None:
    expected = fsverity_utils(files[size])
    assert fsverity.file_digest(str(files[size])) == (bytes.fromhex(expected), size)
    assert digests(hasher, files[size]) == dict.fromkeys(ENGINES, expected)


@pytest.mark.parametrize("where", ["first block", "last partial block", "second level-1 node's range"])
def test_a_flipped_byte_changes_every_engines_digest(hasher: Path, files: dict[int, Path], tmp_path: Path,
                                                    where: str) -> None:
    original = files[MIB + 1]
    data = bytearray(original.read_bytes())
    offset = {"first block": 0, "last partial block": len(data) - 1, "second level-1 node's range": 128 * 4096}[where]
    data[offset] ^= 0x80
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    expected = fsverity_utils(bad)
    assert expected != fsverity_utils(original)
    assert digests(hasher, bad) == dict.fromkeys(ENGINES, expected)


def test_the_python_digest_streams_a_file(tmp_path: Path) -> None:
    """highboot.fsverity reads a file in pieces; the same as the in-memory digest."""
    data = os.urandom(3 * 4096 + 5)
    (tmp_path / "f").write_bytes(data)
    assert fsverity.file_digest(str(tmp_path / "f"))[0] == fsverity.digest(data)
