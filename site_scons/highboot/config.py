"""One build configuration, typed: what SConstruct turns into a graph from kernel + layout to an ESP.
The default build is one; the test builds are a list of them (SConstruct)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_LAYOUT = "templates/layouts/linux-x86_64.toml"
LA57_LAYOUT = "templates/layouts/linux-x86_64-la57.toml"


@dataclass(frozen=True)
class BuildConfig:
    layout: str = DEFAULT_LAYOUT
    kernel: str = ""  # a kernel ELF to boot; "" builds the sample kernel (or c_source)
    shape_kernel: str = ""  # tests: one of the toolchain-shaped kernels, by name
    kernel_base: str = ""  # KERNEL_BASE: where a PIE goes; the sample kernel is linked there
    cmdline: str = ""
    fault: str = "none"
    templates: tuple[str, ...] = ()
    c_source: str | None = None  # build this C file as the kernel, with the rendered linker script
    c_pie: bool = False
    signed: bool = False
    keys: tuple[str, str] | None = None  # (db key, certificate) for signed builds
    kaslr: bool = False
    fb_mode: str = ""  # FB_MODE: "WIDTHxHEIGHT" asks the loader for that display mode; "" keeps the firmware's
