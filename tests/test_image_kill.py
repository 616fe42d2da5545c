"""`scons image` is all or nothing: a build killed (SIGKILL, the whole process group) at any moment
leaves $BUILD_DIR/highboot.img as it was before (the target is Precious: SCons does not remove
it first), or the complete new image, byte for byte the one the build was making (the image is
reproducible, so the test knows it exactly); never a half-written one. The next `scons image`
finishes and removes what the killed build left beside the image. By default, a kill at each
step (SCons starting, the work directory, sfdisk, staging, mcopy, the copy into the disk, the
rename); with -m big, 40 at random moments of the packing and of what SCons does after it."""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from highboot.build.records import IN_PROGRESS
from highboot.inputs.modules import write_pattern
from highboot.packaging import image

ROOT = Path(__file__).resolve().parents[1]
IMG = "highboot.img"
WORK = f".{IMG}{image.WORK_INFIX}"
SEEDS = ("a", "b")


def sha256(path: Path) -> str | None:
    """The file's digest, or None when it is absent."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while piece := f.read(1 << 20):
                h.update(piece)
    except FileNotFoundError:
        return None
    return h.hexdigest()


@dataclass
class Rig:
    """A build directory with a 64 MiB module (the packing takes long enough to be caught at each
    step), the digest of the image `scons image IMAGE_SEED=<seed>` makes for each seed, and how
    long a build takes from the start of its packing to its end."""

    build: Path
    module: Path
    packing: float = 0.0  # seconds from the work directory's appearance to the end of the build
    references: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def image(self) -> Path:
        return self.build / IMG

    def command(self, seed: str) -> list[str]:
        from conftest import build_dir

        return [sys.executable, "-m", "SCons", "-Q", f"BUILD_DIR={self.build}",
                f"CARGO_DIR={build_dir() / 'cargo'}", f"MODULES={self.module}", f"IMAGE_SEED={seed}", "image"]

    def scons_image(self, seed: str) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(seed), cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=1800)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    def expected(self, seed: str) -> str:
        """The digest of the image `scons image IMAGE_SEED=seed` makes of the ESP as it is now (the
        ESP changes only when the tree's loader sources do, but other work may change them)."""
        h = hashlib.sha256()
        for path in sorted(p for p in (self.build / "esp").rglob("*") if p.is_file()):
            h.update(f"{path.relative_to(self.build)}\0{sha256(path)}\0".encode())
        key = (h.hexdigest(), seed)
        if key not in self.references:
            reference = self.build.parent / f"reference-{seed}.img"
            image.build_image(self.build / "esp", reference, seed=seed)
            self.references[key] = sha256(reference)  # type: ignore[assignment]
            reference.unlink()
        return self.references[key]

    def other_seed(self) -> str:
        """The seed whose image the directory does not hold: a build of it has work to do."""
        return SEEDS[1] if sha256(self.image) == self.expected(SEEDS[0]) else SEEDS[0]

    def leftovers(self) -> set[str]:
        return {p.name for p in self.build.iterdir() if p.name.startswith(WORK)}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Rig:
    d = tmp_path_factory.mktemp("image-kill")
    r = Rig(d / "build", d / "module.bin")
    write_pattern(str(r.module), 3, 64 << 20)
    r.scons_image(SEEDS[0])
    assert sha256(r.image) == r.expected(SEEDS[0])
    r.packing = packing_time(r, SEEDS[1])
    assert sha256(r.image) == r.expected(SEEDS[1])
    return r


def packing_time(r: Rig, seed: str) -> float:
    """Build `seed`'s image, timing its packing: from its work directory's appearance to the end."""
    before, began = r.leftovers(), None
    proc = subprocess.Popen(r.command(seed), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if began is None and new_work(r, before):
            began = time.monotonic()
        time.sleep(0.0005)
    assert proc.returncode == 0 and began is not None, "the build did not pack an image"
    return time.monotonic() - began


def kill_at(r: Rig, seed: str, moment: Callable[[set[str]], bool], timeout: float = 300) -> bool:
    """Start `scons image` and SIGKILL its process group as soon as moment(leftovers before the
    start) holds; False when the build ended first."""
    before = r.leftovers()
    proc = subprocess.Popen(r.command(seed), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if moment(before):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.0005)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def new_work(r: Rig, before: set[str], inside: str = "") -> bool:
    """A work directory this build made (not one a killed build left), holding `inside`."""
    return any(not inside or (r.build / name / inside).exists() for name in r.leftovers() - before)


def inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def renamed(r: Rig) -> Callable[[set[str]], bool]:
    """A new file at the image's name (a rename gives it a new inode)."""
    old = inode(r.image)
    return lambda _before: inode(r.image) not in (None, old)


def after(seconds: float) -> Callable[[set[str]], bool]:
    start = time.monotonic()
    return lambda _before: time.monotonic() - start >= seconds


def packing_at(seconds: float) -> tuple[str, Callable[[Rig], Callable[[set[str]], bool]]]:
    """`seconds` after this build's work directory appears."""
    def make(r: Rig) -> Callable[[set[str]], bool]:
        began: list[float] = []

        def moment(before: set[str]) -> bool:
            if not began and new_work(r, before):
                began.append(time.monotonic())
            return bool(began) and time.monotonic() - began[0] >= seconds
        return moment

    return f"{seconds:.3f} s into the packing", make


def check_after_kill(r: Rig, seed: str, old: str | None, what: str) -> str:
    """The image is the old one (absent if there was none) or exactly the new one; say which."""
    now = sha256(r.image)
    assert now in (old, r.expected(seed)), f"killed {what}: {IMG} is neither the old image nor the complete new one"
    if now is not None:
        image.check_gpt(r.image)
    return "absent" if now is None else "old" if now == old else "new"


def kill_and_check(r: Rig, moments: list[tuple[str, Callable[[Rig], Callable[[set[str]], bool]]]]) -> list[str]:
    outcomes = []
    for i, (what, make) in enumerate(moments):
        old, seed = sha256(r.image), r.other_seed()
        killed = kill_at(r, seed, make(r))
        state = check_after_kill(r, seed, old, what)
        outcomes.append(f"{i}: {what}: {'killed' if killed else 'finished'}, {state}, "
                        f"{len(r.leftovers())} work directories left")
    return outcomes


def finish(r: Rig, outcomes: list[str]) -> None:
    """A fresh seed, so SCons must build: the image is the complete new one and nothing is left."""
    r.scons_image("final")
    assert sha256(r.image) == r.expected("final"), "\n".join(outcomes)
    image.check_gpt(r.image)
    assert not r.leftovers(), "\n".join(outcomes)


def filled(r: Rig, before: set[str], inside: str, size: int) -> bool:
    """A file in this build's work directory has `size` bytes written (its sparse blocks allocated)."""
    for name in r.leftovers() - before:
        try:
            if (r.build / name / inside).stat().st_blocks * 512 >= size:
                return True
        except FileNotFoundError:
            pass
    return False


MOMENTS: list[tuple[str, Callable[[Rig], Callable[[set[str]], bool]]]] = [
    ("0.1 s after the start (SCons reading its files)", lambda r: after(0.1)),
    ("as the work directory appears", lambda r: lambda b: new_work(r, b)),
    ("after sfdisk, as the file system is made", lambda r: lambda b: new_work(r, b, "esp.fat")),
    ("while files are staged", lambda r: lambda b: new_work(r, b, "stage")),
    ("while mcopy fills the file system", lambda r: lambda b: filled(r, b, "esp.fat", 16 << 20)),
    ("while the file system is copied into the disk", lambda r: lambda b: filled(r, b, "disk.img", 16 << 20)),
    ("as the new image is renamed into place", lambda r: renamed(r)),
]


def test_killed_image_builds_leave_the_old_or_the_new_image(rig: Rig) -> None:
    outcomes = kill_and_check(rig, MOMENTS)
    print("\n".join(outcomes))
    # The moments were caught, killed builds left work directories (each removed by the next build,
    # so never more than one), and the build after them all cleans up.
    assert sum("killed" in o for o in outcomes) >= 5, "\n".join(outcomes)
    assert any("1 work directories left" in o for o in outcomes), "\n".join(outcomes)
    assert not any(f"{n} work directories left" in o for o in outcomes for n in range(2, 9)), "\n".join(outcomes)
    finish(rig, outcomes)


@pytest.mark.big
def test_many_random_kills(rig: Rig) -> None:
    """Opt-in: 40 kills at random moments of the packing (seeded, repeatable): a random time after
    the work directory appears, up to a little past how long a whole packing takes."""
    rng = random.Random(24)
    moments = [packing_at(t) for t in sorted(rng.uniform(0, rig.packing * 1.1) for _ in range(40))]
    outcomes = kill_and_check(rig, moments)
    print("\n".join(outcomes))
    finish(rig, outcomes)


def test_the_next_build_removes_what_a_killed_one_left(built: dict, tmp_path: Path) -> None:
    out = tmp_path / IMG
    left = tmp_path / f"{WORK}dead0000"
    (left / "stage" / "0").mkdir(parents=True)
    (left / "disk.img").write_bytes(b"half")
    stray = tmp_path / f"{WORK}file"
    stray.write_bytes(b"half")
    unrelated = tmp_path / ".other.img.tmp-x"
    unrelated.write_bytes(b"not ours")
    image.build_image(built["esp"], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.img.tmp-x", IMG]
    image.check_gpt(out)


def test_a_live_build_is_waited_for_not_cleaned_up(built: dict, tmp_path: Path) -> None:
    """A build of the same image holding the lock: its work directory is left alone until it ends."""
    out = tmp_path / IMG
    live = tmp_path / f"{WORK}live0000"
    live.mkdir()
    holder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    errors: list[BaseException] = []

    def build() -> None:
        try:
            image.build_image(built["esp"], out)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=build)
    thread.start()
    try:
        time.sleep(1.0)
        assert live.is_dir() and not out.exists() and thread.is_alive()
    finally:
        os.close(holder)  # the other build ends: its lock goes with it
    thread.join(120)
    assert not errors and not thread.is_alive()
    assert not live.exists() and sorted(p.name for p in tmp_path.iterdir()) == [IMG]
    image.check_gpt(out)


def test_an_image_a_killed_build_renamed_into_place_is_not_taken_for_current(rig: Rig) -> None:
    """What a build of seed b killed just after its rename leaves: b's image, SCons's record of a,
    and the mark of a build in progress (highboot.records), which makes the next build check every
    step again instead of trusting that record."""
    rig.scons_image(SEEDS[0])
    assert sha256(rig.image) == rig.expected(SEEDS[0])
    reference = rig.build.parent / "b.img"
    image.build_image(rig.build / "esp", reference, seed=SEEDS[1])
    os.replace(reference, rig.image)
    (rig.build / IN_PROGRESS).write_text("killed\n")
    again = rig.scons_image(SEEDS[0])
    assert sha256(rig.image) == rig.expected(SEEDS[0]), again.stdout
