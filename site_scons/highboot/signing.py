"""Secure Boot: the project's own db key, a signed BOOTX64.EFI, and an OVMF VARS copy with that key
enrolled (PK, KEK and db), so a QEMU boot with Secure Boot on checks the real chain.

Keys are generated on first use into a directory outside the build tree (default .highboot-keys/,
git-ignored), with mode 0600, and no tool output that could contain them is ever printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from highboot.errors import HighbootError

OWNER_GUID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://highboot.invalid/db-owner"))


def _tool(name: str, hint: str) -> str:
    # Python tools (virt-fw-vars) live next to the interpreter running the build, which is often
    # a virtual environment that is not on PATH (`.venv/bin/scons`).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    found = shutil.which(name, path=path)
    if not found:
        raise HighbootError(f"{name} not found; {hint}", field="SIGN")
    return found


def _run(cmd: list[str], what: str, file: str | Path) -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        # Only the last line: tools like openssl may echo key material on verbose errors.
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise HighbootError(f"{what} failed: {last}", file=file, field="SIGN")


def ensure_keys(key: str | Path, cert: str | Path) -> tuple[Path, Path]:
    """The db key pair, generated (RSA 2048, self-signed, 10 years) when neither file exists."""
    key, cert = Path(key), Path(cert)
    if key.exists() != cert.exists():
        missing = cert if key.exists() else key
        raise HighbootError("one half of the signing key pair is missing; give both SIGN_KEY and SIGN_CERT",
                            file=missing, field="SIGN")
    if not key.exists():
        openssl = _tool("openssl", "install it with: apt-get install openssl")
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp_key = key.with_name(f".{key.name}.tmp")
        _run([openssl, "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
              "-subj", "/CN=highboot project db key/", "-keyout", str(tmp_key), "-out", str(cert)],
             "generating the db key pair", cert)
        os.chmod(tmp_key, 0o600)
        os.replace(tmp_key, key)
    return key, cert


def sign(image: str | Path, out: str | Path, key: str | Path, cert: str | Path) -> None:
    sbsign = _tool("sbsign", "install it with: apt-get install sbsigntool")
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    _run([sbsign, "--key", str(key), "--cert", str(cert), "--output", str(tmp), str(image)], "sbsign", image)
    os.replace(tmp, out)


def enroll_vars(template: str | Path, cert: str | Path, out: str | Path) -> None:
    """An OVMF VARS file with cert as PK, KEK and db and Secure Boot on (no Microsoft keys)."""
    tool = _tool("virt-fw-vars", "install it with: pip install virt-firmware (tools/setup does)")
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    _run([tool, "--input", str(template), "--output", str(tmp), "--enroll-cert", str(cert),
          "--add-db", OWNER_GUID, str(cert), "--no-microsoft", "--sb"], "virt-fw-vars", out)
    os.replace(tmp, out)
