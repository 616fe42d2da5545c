"""tools/bench: the launcher runs benchkit with the project's .venv or says what to run; bad options
are refused before anything is built or booted; the fixed-map figures the README quotes; the limine
section's parts (where Limine comes from, its bench kernel and ESP, its figures and table, the size
target) and, in a quick mode without -icount, both loaders booting its kernel."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from testkit.bootcheck import BootReport

from benchkit import assets, limine
from benchkit.boots import Boot, boot_once, ram_setup
from benchkit.limine import REQUESTS_ASKED, build_highboot, build_kernel, limine_binary, limine_esp
from benchkit.report import print_limine, targets
from benchkit.sections import limine_figures, naive_tables
from highboot.inputs.kernel import read_kernel
from highboot.protocols import AUTO, protocol_for
from highboot.protocols.limine import LIMINE
from highboot.protocols.limine.scan import scan
from highboot.units import GIB, KIB, MIB

ROOT = Path(__file__).resolve().parents[1]


def test_launcher_without_a_venv_names_tools_setup(tmp_path: Path) -> None:
    (tmp_path / "tools").mkdir()
    shutil.copy2(ROOT / "tools" / "bench", tmp_path / "tools" / "bench")
    proc = subprocess.run([str(tmp_path / "tools" / "bench"), "--quick"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr == f"tools/bench: {tmp_path}/.venv/bin/python not found: run tools/setup --bench first " \
                          "(it makes the .venv)\n"
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--skip", "cycles,nosuch"], "--skip: no section named 'nosuch' (the sections: footprint, cycles, modules, "
                                  "kernels, hash, smp, limine, build, size, fuzz)"),
    (["--jobs", "0"], "argument --jobs: expected at least 1, got 0"),
    (["--fuzz", "many"], "argument --fuzz: expected a whole number, got 'many'"),
    (["--limine", "/nonexistent/BOOTX64.EFI"], "--limine: /nonexistent/BOOTX64.EFI is not a file"),
])
def test_bad_options_are_refused_before_anything_runs(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([str(ROOT / "tools" / "bench"), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"tools/bench: error: {message}"
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not out.exists()


def test_fixed_maps_cost_what_the_readme_says() -> None:
    # README: a fixed 127 TiB identity + 64 TiB direct map is 1,532 KiB with 1 GiB pages, 765 MiB with 2 MiB.
    assert naive_tables(GIB) * 4096 == 1532 * KIB
    assert naive_tables(2 * MIB) * 4096 // MIB == 765


# --------------------------------------------------------------------------- the limine section


def test_limine_without_a_mirror_is_said_not_failed(tmp_path: Path) -> None:
    found = limine_binary(None, mirror=tmp_path / "no-mirror", out_dir=tmp_path / "out")
    assert found.path is None and found.source == "Limine: not available (no mirror; pass --limine FILE)"
    given = tmp_path / "BOOTX64.EFI"
    given.write_bytes(b"MZ")
    assert limine_binary(given, mirror=tmp_path / "no-mirror").path == given


def test_limine_from_the_mirror_is_the_binary_tag_s_file(tmp_path: Path) -> None:
    work, mirror = tmp_path / "work", tmp_path / "mirror.git"
    work.mkdir()
    (work / "BOOTX64.EFI").write_bytes(b"MZ limine")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    for cmd in (["init", "-q"], ["add", "BOOTX64.EFI"], ["commit", "-qm", "binary"], ["tag", "v8.2.0-binary"]):
        subprocess.run([*git, *cmd], cwd=work, check=True, capture_output=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(mirror)], check=True, capture_output=True)
    found = limine_binary(None, mirror=mirror, out_dir=tmp_path / "out")
    assert found.path is not None and found.path.read_bytes() == b"MZ limine"
    assert found.source.startswith("Limine 8.2.0 prebuilt")
    missing = limine_binary(None, mirror=mirror, ref="v9.9.9-binary", out_dir=tmp_path / "out")
    assert missing.path is None and missing.source.startswith("Limine: not available (v9.9.9-binary:BOOTX64.EFI")


def test_the_limine_bench_kernel_speaks_limine_and_reads_the_tsc_first(built: dict, tmp_path: Path) -> None:
    elf = build_kernel(built["dir"] / "include", tmp_path / "kernel.elf")
    kernel = read_kernel(elf)
    assert protocol_for(kernel, AUTO) is LIMINE
    assert scan(kernel).base_revision == 2
    assert sorted(r.name for r in scan(kernel).requests) == ["bootloader_info", "framebuffer", "hhdm", "memmap"]
    assert len(scan(kernel).requests) == REQUESTS_ASKED
    image = kernel.initialised_image()
    assert image.read(kernel.entry - image.start, 2) == b"\x0f\x31"  # rdtsc: nothing runs before the TSC is read


def test_limine_esp_boots_the_kernel_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "WORK", tmp_path)
    monkeypatch.setattr(limine, "WORK", tmp_path)
    loader, kernel = tmp_path / "limine.efi", tmp_path / "k.elf"
    loader.write_bytes(b"MZ")
    kernel.write_bytes(b"\x7fELF")
    esp = limine_esp(loader, kernel)
    assert (esp / "EFI" / "BOOT" / "BOOTX64.EFI").read_bytes() == b"MZ"
    assert (esp / "kernel.elf").read_bytes() == b"\x7fELF"
    conf = (esp / "limine.conf").read_text()
    assert "timeout: 0\n" in conf and "protocol: limine\n" in conf and "kernel_path: boot():/kernel.elf\n" in conf


def _runs(label: str, *tscs: int, answered: int | None = None) -> list[dict]:
    facts = {"tsc_kernel": "0"} | ({"limine_answered": str(answered), "limine_bootloader": label} if answered else {})
    report = BootReport(facts, [], [], [], [], [])
    return [{"label": label, "ok": True, "status": 33, "wall_s": 1.0, "tsc_kernel": t, "report": report} for t in tscs]


def test_limine_figures_and_their_table(capsys: pytest.CaptureFixture[str]) -> None:
    by_label = {"highboot": _runs("highboot", 2_700_000_000, 2_700_000_002, answered=4),
                "limine": _runs("limine", 3_000_000_000, answered=3),
                "grub": _runs("grub", 2_720_000_000), "floor": _runs("floor", 2_660_000_000),
                "highboot_protocol": _runs("own", 2_690_000_000)}
    figures = limine_figures(by_label)
    assert figures["rows"]["highboot"]["median"] == 2_700_000_001
    assert figures["rows"]["highboot"]["requests_answered"] == 4
    assert figures["highboot_over_limine"] == pytest.approx(0.9)
    assert figures["highboot_over_grub"] == pytest.approx(2_700_000_001 / 2_720_000_000)
    assert figures["above_floor"]["limine"] == 340_000_000
    figures.update({"icount": "-icount shift=0,sleep=off", "cpu": "max", "ram": "256M", "runs_each": 2,
                    "requests_asked": 4, "limine_source": "Limine 8.2.0 prebuilt", "errors": {}})
    print_limine(figures, None)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "2,700.0 M" in out and "340.0 M" in out and "0.9000" in out
    assert "the kernel saw 3 of its 4 requests answered" in out
    del figures["rows"]["limine"]
    figures["limine_source"] = "Limine: not available (no mirror; pass --limine FILE)"
    print_limine(limine_figures({k: v for k, v in by_label.items() if k != "limine"}) | {
        k: figures[k] for k in ("icount", "cpu", "ram", "runs_each", "requests_asked", "limine_source", "errors")},
        None)  # type: ignore[arg-type]
    assert "Limine: not available (no mirror; pass --limine FILE)" in capsys.readouterr().out


def test_the_size_target_is_128_kib_for_both_protocols() -> None:
    size = {"size": {"bootx64_bytes": 65_536, "limine_protocol_bootx64_bytes": 61_440}}
    assert targets(size)["bootx64_under_128KiB"] is True
    size["size"]["limine_protocol_bootx64_bytes"] = 128 * KIB
    assert targets(size)["bootx64_under_128KiB"] is False
    assert "bootx64_under_64KiB" not in targets(size)


def test_both_loaders_boot_the_limine_bench_kernel(built: dict, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The section's plumbing in a quick mode: no -icount (a boot in seconds, not minutes), highboot
    built for the kernel and, when the mirror is here, Limine; each kernel reports its entry TSC and
    the four requests answered, and which loader answered them."""
    monkeypatch.setattr(assets, "WORK", tmp_path)
    monkeypatch.setattr(limine, "WORK", tmp_path)
    build = build_highboot(built["dir"] / "include", tmp_path / "build", jobs=1)
    loaders = {"highboot": build.esp}
    found = limine_binary(None, out_dir=tmp_path)
    if found.path is not None:
        loaders["Limine"] = limine_esp(found.path, build.kernel)
    for name, esp in loaders.items():
        result = boot_once(Boot(name, esp, ram_setup("256M"), highboot_kernel=False), timeout=300)
        assert result["ok"], result.get("serial_tail")
        facts = result["report"].facts
        assert result["tsc_kernel"] > 0 and facts["limine_answered"] == str(REQUESTS_ASKED)
        assert facts["limine_bootloader"].startswith(name)
