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
from collections.abc import Callable
from pathlib import Path

from highboot.errors import HighbootError
from highboot.inputs.paths import KEY, check_file, check_not_output

OWNER_GUID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://highboot.invalid/db-owner"))


def _tool(name: str, hint: str) -> str:
    # Python tools (virt-fw-vars) live next to the interpreter running the build, which is often
    # a virtual environment that is not on PATH (`.venv/bin/scons`).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    found = shutil.which(name, path=path)
    if not found:
        raise HighbootError(f"{name} not found; {hint}", field="SIGN")
    return found


def _run(cmd: list[str], what: str, file: str | Path, field: str = "SIGN") -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        # Only the last line: tools like openssl may echo key material on verbose errors.
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise HighbootError(f"{what} failed: {last}", file=file, field=field)


def check_key_pair(key: str, cert: str, outputs: tuple[tuple[str, str], ...],
                   named: Callable[[str], dict[str, str | None]]) -> None:
    """SIGN_KEY and SIGN_CERT as paths a user gave: files of their own (each may not exist yet: the
    pair is made on first use), outside the build's output."""
    for option, path in (("SIGN_KEY", key), ("SIGN_CERT", cert)):
        check_not_output(path, outputs, **named(option))
        if os.path.lexists(path):
            check_file(path, KEY, **named(option))
    if os.path.realpath(key) == os.path.realpath(cert):
        raise HighbootError(f"{cert!r} is SIGN_KEY's file too; the key and its certificate are two files",
                            **named("SIGN_CERT"))


def ensure_keys(key: str | Path, cert: str | Path) -> tuple[Path, Path]:
    """The db key pair, generated (RSA 2048, self-signed, 10 years) when neither file exists, both
    written beside and renamed into place, the key last (a pair a killed build left half in place is
    finished on the next build); a key or certificate that openssl cannot read is refused, naming
    SIGN_KEY or SIGN_CERT."""
    key, cert = Path(key), Path(cert)
    new_key, new_cert = key.with_name(f".{key.name}.new"), cert.with_name(f".{cert.name}.new")
    if not key.exists() and cert.exists() and new_key.exists():
        os.replace(new_key, key)  # killed between the two renames
    if key.exists() != cert.exists():
        missing, option = (cert, "SIGN_CERT") if key.exists() else (key, "SIGN_KEY")
        raise HighbootError("one half of the signing key pair is missing; give both SIGN_KEY and SIGN_CERT (or "
                            "neither file, and a new pair is made)", file=missing, field=option)
    openssl = _tool("openssl", "install it with: apt-get install openssl")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert.parent.mkdir(parents=True, exist_ok=True)
        _run([openssl, "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
              "-subj", "/CN=highboot project db key/", "-keyout", str(new_key), "-out", str(new_cert)],
             "generating the db key pair", cert)
        os.chmod(new_key, 0o600)
        os.replace(new_cert, cert)
        os.replace(new_key, key)
    _run([openssl, "pkey", "-in", str(key), "-noout"], "reading the db key (a PEM private key)", key, "SIGN_KEY")
    _run([openssl, "x509", "-in", str(cert), "-noout"], "reading the db certificate (a PEM X.509 certificate)",
         cert, "SIGN_CERT")
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
