"""The digest the build bakes in and the loader checks (fs-verity's, loader/src/verity.rs): every
hashing engine (scalar, SSE2 4 lanes, AVX2 8 lanes, SHA-NI) compiled for this machine and run on
edge sizes, against `fsverity digest` (fsverity-utils) and highboot.verity. The engines the boots
use are checked in real boots too (test_boot: SSE2 on -cpu qemu64, AVX2 on -cpu max)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from highboot import verity

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("Scalar", "Sse2", "Avx2", "ShaNi")
MIB = 1 << 20
# Around the block and tree-level boundaries: 128 hashes fill a level-1 block.
SIZES = (0, 1, 4095, 4096, 4097, 128 * 4096, 128 * 4096 + 1, MIB + 1, 300 * MIB)

MAIN = """
#[allow(dead_code)]
mod sha256;
#[allow(dead_code)]
mod verity;
use verity::Engine;

fn supported(e: Engine) -> bool {
    match e {
        Engine::Scalar | Engine::Sse2 => true,
        Engine::Avx2 => std::is_x86_feature_detected!("avx2"),
        Engine::ShaNi => std::is_x86_feature_detected!("sha") && std::is_x86_feature_detected!("sse4.1"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let engine = match args[1].as_str() {
        "Scalar" => Engine::Scalar, "Sse2" => Engine::Sse2, "Avx2" => Engine::Avx2, "ShaNi" => Engine::ShaNi,
        other => panic!("unknown engine {other}"),
    };
    if !supported(engine) {
        println!("unsupported");
        return;
    }
    let data = std::fs::read(&args[2]).unwrap();
    let d = verity::digest(&data, engine);
    println!("{}", d.iter().map(|b| format!("{:02x}", b)).collect::<String>());
}
"""


@pytest.fixture(scope="module")
def hasher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The loader's digest code built for this machine (optimised, as in the loader)."""
    d = tmp_path_factory.mktemp("verity")
    for name in ("sha256.rs", "verity.rs"):
        shutil.copy(ROOT / "loader" / "src" / name, d / name)
    (d / "main.rs").write_text(MAIN)
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


def fsverity(path: Path) -> str:
    tool = shutil.which("fsverity")
    assert tool, "fsverity not found: `tools/setup --test` installs it (Debian package fsverity)"
    out = subprocess.run([tool, "digest", str(path)], capture_output=True, text=True, check=True, timeout=600)
    algorithm, _, digest = out.stdout.split()[0].partition(":")
    assert algorithm == "sha256"
    return digest


def run(hasher: Path, engine: str, path: Path) -> str:
    out = subprocess.run([str(hasher), engine, str(path)], capture_output=True, text=True, timeout=600, check=True)
    digest = out.stdout.strip()
    assert digest != "unsupported", f"this CPU has no {engine}: it cannot be tested here"
    return digest


@pytest.mark.parametrize("size", SIZES)
def test_every_engine_matches_fsverity(hasher: Path, files: dict[int, Path], size: int) -> None:
    expected = fsverity(files[size])
    assert verity.file_digest(str(files[size])) == (bytes.fromhex(expected), size)
    for engine in ENGINES:
        assert run(hasher, engine, files[size]) == expected, engine


@pytest.mark.parametrize("where", ["first block", "last partial block", "second level-1 node's range"])
def test_a_flipped_byte_changes_every_engines_digest(hasher: Path, files: dict[int, Path], tmp_path: Path,
                                                    where: str) -> None:
    original = files[MIB + 1]
    data = bytearray(original.read_bytes())
    offset = {"first block": 0, "last partial block": len(data) - 1, "second level-1 node's range": 128 * 4096}[where]
    data[offset] ^= 0x80
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(data))
    expected = fsverity(bad)
    assert expected != fsverity(original)
    for engine in ENGINES:
        assert run(hasher, engine, bad) == expected, engine


def test_the_python_digest_streams_a_file(tmp_path: Path) -> None:
    """highboot.verity reads a file in pieces; the same as the in-memory digest."""
    data = os.urandom(3 * 4096 + 5)
    (tmp_path / "f").write_bytes(data)
    assert verity.file_digest(str(tmp_path / "f"))[0] == verity.digest(data)
