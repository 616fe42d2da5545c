"""Build configurations, typed: what the build turns into a graph from kernel + layout to an ESP.

The default build is one `BuildConfig` (from the options); highboot's own test builds are more of
them (site_scons/testkit/matrix.py). Nothing here imports SCons.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, field, make_dataclass
from typing import Any

from highboot.inputs.modules import Module
from highboot.options.schema import BY_NAME, OPTIONS, Kind, Option, parse

DEFAULT_LAYOUT = BY_NAME["LAYOUT"].default
C_KERNEL = "examples/c-kernel/kernel.c"
#: Rust source the sample kernel shares with the loader (included by path): its builds depend on it.
SHARED_RUST = "loader/src/com1.rs"


def _field_type(option: Option) -> Any:
    return {Kind.BOOL: bool, Kind.SIZE: int, Kind.COUNT: int, Kind.PATHS: tuple[str, ...],
            Kind.MODULES: tuple[Module, ...]}.get(option.kind, str)


def _default(option: Option) -> Any:
    if option.kind in (Kind.PATHS, Kind.MODULES):
        return ()
    return parse(option, option.default)


#: One configuration's build, typed: a field per option that shapes the build (highboot.options,
#: named name.lower(): kernel, layout, templates, modules, cmdline, kernel_base, kaslr, sign, ...),
#: then what only the tests' configurations set.
BuildConfig = make_dataclass("BuildConfig", [
    *((o.field, _field_type(o), field(default=_default(o))) for o in OPTIONS if o.build),
    ("shape_kernel", str, field(default="")),  # tests: one of the toolchain-shaped kernels, by name
    ("c_source", str | None, field(default=None)),  # build this C file as the kernel, with the rendered linker script
    ("c_pie", bool, field(default=False)),
    # tests: the Limine sample kernel, built in this shape (highboot.build.steps.LIMINE_SHAPES) with
    # these -D knobs ((NAME, C token) pairs) against this configuration's rendered header
    ("limine_shape", str, field(default="")),
    ("limine_defines", tuple[tuple[str, str], ...], field(default=())),
    ("keys", tuple[str, str] | None, field(default=None)),  # (db key, certificate) for signed test builds
], frozen=True)
BuildConfig.__module__ = __name__


def build_config(values: Mapping[str, str], *, modules: tuple[Module, ...] = (), templates: tuple[str, ...] = (),
                 where: Callable[[str], dict[str, str | None]] | None = None) -> Any:
    """A BuildConfig from option values as text (NAME -> text; the schema's default for the rest),
    each parsed and checked; a refusal names what where(NAME) says (default: the option)."""
    fields: dict[str, Any] = {"modules": modules, "templates": templates}
    for o in OPTIONS:
        if o.build and o.kind not in (Kind.PATHS, Kind.MODULES):
            named = where(o.name) if where else {"file": None, "field": o.name}
            fields[o.field] = parse(o, values.get(o.name, o.default), **named)
    return BuildConfig(**fields)


def plan_inputs(cfg: Any, kernel_base: int | None) -> dict[str, Any]:
    """What the planner takes from a configuration (the options marked plan=True), as plain data for
    plan.json's step: the kernel base as a number (None: not given), modules as tables."""
    inputs = {o.field: getattr(cfg, o.field) for o in OPTIONS if o.plan}
    inputs["kernel_base"] = kernel_base
    inputs["modules"] = [asdict(m) for m in cfg.modules]
    inputs["fault"] = "" if cfg.fault == "none" else cfg.fault
    return inputs
