"""The configurations highboot's own suite builds (`scons test`), each under $BUILD_DIR/test/<name>,
and the generated test modules they carry."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from highboot.inputs.modules import Module
from highboot.options.config import C_KERNEL, BuildConfig, build_config
from highboot.options.project import load_project

LA57_LAYOUT = "templates/layouts/linux-x86_64-la57.toml"
MINIMAL_LAYOUT = "templates/layouts/minimal.toml"

#: Test modules are generated (highboot.inputs.modules.write_pattern) as <seed>-<size>.bin here, under
#: $BUILD_DIR; the sample kernels check each against its pattern (its command line says pattern=<seed>).
PATTERNS_DIR = "test/patterns"


def pattern_module(build_dir: str, seed: int, size: int, name: str, cmdline: str = "") -> Module:
    return Module(path=f"{build_dir}/{PATTERNS_DIR}/{seed}-{size}.bin", name=name,
                  cmdline=f"{cmdline} pattern={seed}".strip())


def pattern_files(configs: dict[str, BuildConfig], build_dir: str) -> dict[str, tuple[int, int]]:
    """Every generated test module the configurations use: path -> (seed, size)."""
    out = {}
    prefix = f"{build_dir}/{PATTERNS_DIR}/"
    for cfg in configs.values():
        for m in cfg.modules:
            if m.path.startswith(prefix):
                seed, size = m.path[len(prefix):-len(".bin")].split("-")
                out[m.path] = (int(seed), int(size))
    return out


def module_sets_for_tests(build_dir: str) -> dict[str, tuple[Module, ...]]:
    """The module sets the tests boot (tests/test_modules.py checks what the kernels report)."""
    return {
        # Names and command lines of every kind, sizes around page boundaries, an empty module.
        "three": (pattern_module(build_dir, 1, 100_000, "initrd", "root=/dev/ram0 quiet"),
                  pattern_module(build_dir, 2, 4096, "font.psf"),
                  pattern_module(build_dir, 3, 1, "blob \u00fc \"quoted\"", 'say "hi" \\ there'),
                  Module(path=f"{build_dir}/{PATTERNS_DIR}/0-0.bin", name="empty")),
        "many": tuple(pattern_module(build_dir, 100 + i, 1 + 517 * i, f"m{i:02d}", f"index={i}") for i in range(64)),
    }


def c_string(text: str) -> str:
    """text as a C string literal, for a -D knob (gcc gets it as one argument, no shell)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: What every Limine sample kernel of the suite is built with: the requests newer than Limine 8.x
#: must be answered too (INTERNAL_MODULES keeps its default: the module response is revision 1).
LIMINE_DEFINES = (("REQUIRE_NEWER", "1"),)


def limine_config(shape: str, modules: tuple[Module, ...], cmdline: str = "", knobs: tuple[tuple[str, str], ...] = (),
                  **options: Any) -> BuildConfig:
    """The Limine sample kernel (examples/limine-kernel) in one shape (highboot.build.steps.LIMINE_SHAPES),
    told what the build hands it: the module count and the command line."""
    defines = (*LIMINE_DEFINES, ("EXPECT_MODULES", str(len(modules))), ("EXPECT_CMDLINE", c_string(cmdline)), *knobs)
    return BuildConfig(limine_shape=shape, limine_defines=defines, modules=modules, cmdline=cmdline, **options)


def limine_configs(build_dir: str) -> dict[str, BuildConfig]:
    """The Limine sample kernel's configurations (tests/test_limine.py boots them). PROTOCOL stays
    auto (the build reads it from the kernel) but for limine-fixed. Every one has a module: the
    kernel expects a module response, which a build without modules does not give."""
    initrd = pattern_module(build_dir, 21, 70_000, "initrd", "root=/dev/ram0 quiet")
    font = pattern_module(build_dir, 22, 4096, "font.psf")
    return {
        # GNU ld's PIE linked at 0, placed by the build: modules, a command line, a stack it asks for.
        "limine-pie": limine_config("gcc-pie", (initrd, font), "console=ttyS0 limine pie",
                                    (("STACK_SIZE", str(256 << 10)),)),
        # A fixed kernel at the top 2 GiB, base revision 1, 4-level paging only; PROTOCOL forced.
        "limine-fixed": limine_config("gcc-fixed", (font,), "fixed",
                                      (("BASE_REVISION", "1"), ("PAGING_MIN", "0"), ("PAGING_MAX", "0")),
                                      protocol="limine"),
        # ld.lld's PIE (pointers only in relocation addends) with KASLR.
        "limine-lld-kaslr": limine_config("lld-pie", (initrd,), "kaslr", kaslr=True),
        # The 5-level layout; the kernel asks for 4..5-level (its default).
        "limine-la57": limine_config("gcc-pie", (font,), "la57", layout=LA57_LAYOUT),
        # The 4-level layout and a kernel that allows 5-level paging only: 5-level on a CPU with LA57
        # (the planned tables under a 5-level root), refused at boot elsewhere.
        "limine-la57-only": limine_config("gcc-pie", (font,), "la57 only", (("PAGING_MIN", "1"), ("PAGING_MAX", "1"))),
        # The 4-level layout from a firmware in 5-level paging (a test build's): 5-level paging for the
        # kernel (it prefers it) with no paging-mode change.
        "limine-fw5": limine_config("gcc-pie", (font,), "fw5", fault="firmware_5level"),
        # Base revision 0: the lower half identity-maps memory (under a 5-level root too).
        "limine-rev0": limine_config("gcc-pie", (font,), "rev0", (("BASE_REVISION", "0"),)),
        # Base revision 3: RSDP, SMBIOS and the EFI system table physical; the HHDM restricted.
        "limine-rev3": limine_config("gcc-pie", (font,), "rev3", (("BASE_REVISION", "3"),)),
        # Base revision 5: the exact register state, the local APICs, the firmware's tables RESERVED_MAPPED.
        "limine-rev5": limine_config("gcc-pie", (font,), "rev5", (("BASE_REVISION", "5"),)),
        # A revision newer than highboot keeps: booted with its newest, the tag left unacknowledged.
        "limine-future": limine_config("gcc-pie", (font,), "future", (("BASE_REVISION", "9"),
                                                                      ("EXPECT_UNSUPPORTED", "1"))),
        # The display: FB_MODE chooses the mode among those listed; an EDID on the display's handle (a
        # test build's, OVMF has none).
        "limine-display": limine_config("gcc-pie", (font,), "display", fb_mode="1024x768", fault="edid"),
    }


def configs_for_tests(build_dir: str) -> dict[str, BuildConfig]:
    """Configurations only the tests use, each built under $BUILD_DIR/test/<name>: other layouts,
    another link address, injected faults, C kernels, toolchain-shaped kernels (see
    tests/test_shape_boots.py)."""
    keys = (f"{build_dir}/test/keys/db.key", f"{build_dir}/test/keys/db.crt")
    sets = module_sets_for_tests(build_dir)
    configs = {
        # A command line is bytes: these are not UTF-8 (as from a shell's CMDLINE=$'\xff...').
        "minimal": BuildConfig(layout=MINIMAL_LAYOUT, cmdline="bytes \udcff\udcfe\udc80 pass"),
        "alt-dmap": BuildConfig(layout="tests/layouts/alt-dmap.toml", kernel_base="0xffffffff81000000",
                                cmdline="alt layout: direct map elsewhere, kernel at +16 MiB"),
        # With modules: they are read before the block fails, and must be freed with the rest.
        "fault-no-memory": BuildConfig(fault="no_memory", modules=sets["three"], fb_mode="800x600"),
        "fault-stale-key": BuildConfig(fault="stale_map_key"),
        "fault-panic": BuildConfig(fault="panic"),
        "signed": BuildConfig(sign=True, keys=keys),
        "c-kernel": BuildConfig(c_source=C_KERNEL, cmdline="hello from C"),
        "c-kernel-pie": BuildConfig(c_source=C_KERNEL, c_pie=True, kernel_base="0xffffffff80200000"),
        "c-kernel-minimal": BuildConfig(c_source=C_KERNEL, layout=MINIMAL_LAYOUT),
        "la57": BuildConfig(layout=LA57_LAYOUT),
        "fw5-4level": BuildConfig(fault="firmware_5level"),
        "fw5-la57": BuildConfig(layout=LA57_LAYOUT, fault="firmware_5level"),
        "kaslr": BuildConfig(kaslr=True),
        "kaslr-la57": BuildConfig(kaslr=True, layout=LA57_LAYOUT),
        "kaslr-c-pie": BuildConfig(kaslr=True, c_source=C_KERNEL, c_pie=True),
        "shape-gcc-rela-base": BuildConfig(shape_kernel="gcc-rela", kernel_base="0xffffffff81000000"),
        # Modules (tests/test_modules.py): with KASLR; 64 on the 5-level layout; signed; in a C
        # kernel that is not handed its file.
        "modules": BuildConfig(kaslr=True, modules=sets["three"]),
        "modules-many-la57": BuildConfig(kaslr=True, layout=LA57_LAYOUT, modules=sets["many"]),
        "modules-signed": BuildConfig(sign=True, keys=keys, modules=sets["three"][:2]),
        "modules-c": BuildConfig(c_source=C_KERNEL, modules=sets["three"], keep_kernel_file=False),
        # FB_MODE: between two modes of QEMU's std VGA (1024x768 taken); below every mode (kept).
        "fb-1100x800": BuildConfig(fb_mode="1100x800"),
        "fb-600x400": BuildConfig(fb_mode="600x400"),
        # SMP (tests/test_smp.py): off (the kernel starts the APs), a processor that never checks
        # in, at most 4 CPUs with 64 KiB stacks.
        "smp-off": BuildConfig(smp=False),
        "smp-lost-ap": BuildConfig(fault="lost_ap"),
        "smp-no-low-page": BuildConfig(fault="no_low_page"),
        "smp-max4-64k": BuildConfig(max_cpus=4, ap_stack_size=64 * 1024),
        # AP stacks too large for a 256 MiB guest (tests/test_ap_stacks.py): one of two fits.
        "smp-big-stacks": BuildConfig(max_cpus=3, ap_stack_size=120 << 20),
        "c-kernel-big-stacks": BuildConfig(c_source=C_KERNEL, max_cpus=3, ap_stack_size=120 << 20),
        "c-kernel-smp-off": BuildConfig(c_source=C_KERNEL, smp=False),
        # DIRECT_MAP_EXEC: the direct map executable, as Limine maps its HHDM (tests/test_boot.py).
        "direct-map-exec": BuildConfig(direct_map_exec=True),
    }
    # Every toolchain kernel boots with and without KASLR on both paging depths (the -shared one, a
    # variation of the static PIEs, with KASLR only).
    variants = {"": BuildConfig(), "-kaslr": BuildConfig(kaslr=True), "-la57": BuildConfig(layout=LA57_LAYOUT),
                "-la57-kaslr": BuildConfig(layout=LA57_LAYOUT, kaslr=True)}
    shapes = {"gcc-rela": tuple(variants), "gcc-relr": tuple(variants), "lld-relr": tuple(variants),
              "rust-spec": tuple(variants), "lld-shared": ("-kaslr",)}
    for kernel, names in shapes.items():
        for variant in names:
            configs[f"shape-{kernel}{variant}"] = replace(variants[variant], shape_kernel=kernel)
    configs.update(limine_configs(build_dir))
    return configs


def example_configs(projects: list[str]) -> dict[str, Any]:
    """One configuration per example project file (examples/<name>/highboot.toml), named example-<name>;
    a project with a [test] table brings its own kernel and is tested by its own `scons test`
    (tests/test_kernel_tests.py)."""
    out = {}
    for path in projects:
        project = load_project(path)
        if project.test:
            continue
        out[f"example-{os.path.basename(os.path.dirname(path))}"] = build_config(
            project.options, modules=tuple(project.modules), templates=project.templates, where=project.field)
    return out
