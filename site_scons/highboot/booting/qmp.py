"""A QEMU Machine Protocol client, as small as the test runner needs: QEMU's events (why it shut
down), a screenshot of the display, and stopping it.

QMP is JSON objects over a socket: QEMU greets, the client sends `qmp_capabilities`, then every
command gets a `return` (or an `error`) and events arrive between them.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class QmpError(Exception):
    pass


class Qmp:
    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.events: list[dict[str, Any]] = []
        self.tried = False  # connect() was called

    def connect(self, timeout: float) -> bool:
        """Connect and leave capabilities negotiation; False when QEMU has not made its socket
        within `timeout` seconds (it has not started, or exited)."""
        self.tried = True
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
                break
            except OSError:
                sock.close()
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
        self.sock = sock
        try:
            self._message(timeout=10)  # the greeting
            self.command("qmp_capabilities")
        except (OSError, QmpError):
            self.close()
            return False
        return True

    def poll(self) -> list[dict[str, Any]]:
        """Events that arrived since the last poll (never waits)."""
        if self.sock is not None:
            try:
                while True:
                    message = self._message(timeout=0)
                    if message is None:
                        break
                    if "event" in message:
                        self.events.append(message)
            except (OSError, QmpError):
                self.close()
        out, self.events = self.events, []
        return out

    def command(self, name: str, timeout: float = 10, **arguments: Any) -> Any:
        """Run a command and return what it returns; QmpError with QEMU's reason if it refused."""
        if self.sock is None:
            raise QmpError("not connected")
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:  # (QEMU exited: a broken pipe)
            self.close()
            raise QmpError(f"{name}: {exc}") from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._message(timeout=max(0.0, deadline - time.monotonic()))
            except OSError as exc:
                self.close()
                raise QmpError(f"{name}: {exc}") from None
            if message is None:
                raise QmpError(f"{name}: no answer within {timeout} s")
            if "event" in message:
                self.events.append(message)
            elif "error" in message:
                raise QmpError(message["error"].get("desc", str(message["error"])))
            elif "return" in message:
                return message["return"]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _message(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON object (one per line), or None if none came within `timeout` s."""
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if timeout and left <= 0:
                return None
            self.sock.settimeout(left if timeout else 0.0)  # (0: never blocks)
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return None
            if not chunk:
                raise QmpError("QEMU closed the QMP socket")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise QmpError(f"not a QMP message: {line[:80]!r}") from exc
        if not isinstance(message, dict):
            raise QmpError(f"not a QMP message: {line[:80]!r}")
        return message
