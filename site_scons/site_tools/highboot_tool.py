"""SCons tool: wires highboot's build steps (site_scons/highboot) into builders. No logic here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import SCons.Action
import SCons.Builder
import SCons.Errors
import SCons.Script

from highboot import build
from highboot.errors import HighbootError
from highboot.render import template_files

PACKAGE_DIR = Path(build.__file__).resolve().parent


def _fail(target: Any, exc: HighbootError) -> SCons.Errors.BuildError:
    # The same "highboot: error:" as every other refusal, after SCons's "scons: *** [target]".
    return SCons.Errors.BuildError(node=target[0], errstr=f"highboot: error: {exc.format()}", status=2, exitstatus=2)


def _package_deps(env: Any) -> list[Any]:
    """Generated files depend on the generator (SCons only fingerprints an action's own bytecode)."""
    return sorted(env.Glob(str(PACKAGE_DIR / "*.py")), key=str)


def _plan_action(target: Any, source: Any, env: Any) -> None:
    try:
        build.make_plan(str(source[0]), str(source[1]), str(target[0]), env["PLAN_OPTIONS"])
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _plan_emitter(target: Any, source: Any, env: Any) -> tuple[Any, Any]:
    env.Depends(target, _package_deps(env))
    return target, source + [env.Value(json.dumps(env["PLAN_OPTIONS"], sort_keys=True))]


def _render_action(target: Any, source: Any, env: Any) -> None:
    plan = str(source[0]) if env.get("RENDER_WITH_PLAN") else None
    try:
        build.render_file(env["TEMPLATE_DIRS"], env["TEMPLATE"], str(target[0]), plan, env.get("RENDER_EXTRA", {}))
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _render_emitter(target: Any, source: Any, env: Any) -> tuple[Any, Any]:
    try:
        files = template_files(env["TEMPLATE_DIRS"], env["TEMPLATE"])
    except HighbootError as exc:
        # While the SConstruct is read: stop like its own checks do (a UserError adds a line
        # pointing at this file, as if the tool were at fault).
        print(f"highboot: error: {exc.format()}", file=sys.stderr)
        SCons.Script.Exit(2)
    env.Depends(target, [env.File(str(f)) for f in files] + _package_deps(env))
    key = {"template": env["TEMPLATE"], "dirs": list(env["TEMPLATE_DIRS"]), "extra": env.get("RENDER_EXTRA", {})}
    return target, source + [env.Value(json.dumps(key, sort_keys=True, default=str))]


def _cargo_action(target: Any, source: Any, env: Any) -> None:
    try:
        build.cargo_build(env["HIGHBOOT_RUST"], env["CARGO_CRATE"], env["CARGO_TARGET"], env["CARGO_TARGET_DIR"],
                          env["CARGO_ARTIFACT"], str(target[0]), env.get("CARGO_ENV", {}),
                          env.get("CARGO_RUSTFLAGS", []), bool(env.get("VERBOSE")))
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _cargo_emitter(target: Any, source: Any, env: Any) -> tuple[Any, Any]:
    crate = env.Dir(env["CARGO_CRATE"])
    files = [crate.File("Cargo.toml")] + env.Glob(f"{crate}/src/*.rs") + env.Glob(f"{crate}/build.rs")
    lock = crate.File("Cargo.lock")
    if lock.exists():
        files.append(lock)
    rust = env.get("HIGHBOOT_RUST")
    key = {"rust": rust.describe() if rust else "", "env": env.get("CARGO_ENV", {}),
           "flags": env.get("CARGO_RUSTFLAGS", []), "target": env["CARGO_TARGET"]}
    # One cargo at a time per target dir: builds of several configurations share its core.
    env.SideEffect(env.File(f"{env['CARGO_TARGET_DIR']}/.highboot-scons"), target)
    return target, source + files + [env.Value(json.dumps(key, sort_keys=True))]


def _pecheck_action(target: Any, source: Any, env: Any) -> None:
    try:
        build.check_and_install_loader(str(source[0]), str(target[0]))
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _c_kernel_action(target: Any, source: Any, env: Any) -> None:
    # source: the C file, then (linker-script builds) the rendered linker script, then the header.
    try:
        build.compile_c_kernel(str(source[0]), str(target[0]), env["C_INCLUDE"],
                               linker_script=None if env["C_SHAPE"] else str(source[1]), pie=env["C_PIE"],
                               shape=env["C_SHAPE"], verbose=bool(env.get("VERBOSE")))
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _install_esp_action(target: Any, source: Any, env: Any) -> None:
    build.install_together([(str(s), str(t)) for s, t in zip(source, target, strict=True)])


def _sign_action(target: Any, source: Any, env: Any) -> None:
    try:
        build.sign_loader(str(source[0]), str(target[0]), str(target[1]), env["SIGN_KEY"], env["SIGN_CERT"])
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _image_action(target: Any, source: Any, env: Any) -> None:
    from highboot.image import build_image

    try:
        build_image(env["ESP_DIR"], str(target[0]), seed=env["IMAGE_SEED"] or None)
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _map_action(target: Any, source: Any, env: Any) -> None:
    try:
        build.show_map(env["LAYOUT"], str(source[0]), env["BUILD_DIR"])
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _qemu_action(target: Any, source: Any, env: Any) -> int:
    try:
        return build.run_qemu(env["ESP_DIR"], kernel=env["KERNEL_FILE"], plan_file=env["PLAN_FILE"],
                              out_dir=env["BUILD_DIR"], gdb=env["QEMU_GDB"], kaslr=env["KASLR"],
                              cpu=env["QEMU_CPU"], memory=env["QEMU_MEMORY"], graphic=env["GRAPHIC"],
                              secure_vars=env.get("SECURE_VARS"))
    except HighbootError as exc:
        raise _fail(target, exc) from None


def generate(env: Any) -> None:
    quiet = not env.get("VERBOSE")

    def action(func: Any, text: str) -> SCons.Action.Action:
        return SCons.Action.Action(func, text if quiet else None)

    env["BUILDERS"]["HighbootPlan"] = SCons.Builder.Builder(
        action=action(_plan_action, "Planning $TARGET"), emitter=_plan_emitter)
    env["BUILDERS"]["HighbootRender"] = SCons.Builder.Builder(
        action=action(_render_action, "Rendering $TARGET"), emitter=_render_emitter)
    env["BUILDERS"]["Cargo"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_cargo_action, "Building $TARGET (cargo, $CARGO_TARGET)"),
        emitter=_cargo_emitter)
    env["BUILDERS"]["PECheck"] = SCons.Builder.Builder(
        action=action(_pecheck_action, "Checking $SOURCE (pefile) -> $TARGET"))
    env["BUILDERS"]["CKernel"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_c_kernel_action, "Compiling $TARGET (gcc)",
                                   varlist=["C_PIE", "C_INCLUDE", "C_SHAPE"]))
    env["BUILDERS"]["InstallESP"] = SCons.Builder.Builder(
        action=action(_install_esp_action, "Installing the ESP: $TARGETS"))
    env["BUILDERS"]["SignLoader"] = SCons.Builder.Builder(
        action=action(_sign_action, "Signing $TARGET (sbsign) and enrolling the key in $TARGETS"),
        emitter=lambda target, source, env: (target, source + [env.Value(f"{env['SIGN_KEY']}:{env['SIGN_CERT']}")]))
    env["BUILDERS"]["DiskImage"] = SCons.Builder.Builder(
        action=action(_image_action, "Packing $TARGET (GPT, FAT32 EFI System Partition)"),
        emitter=lambda target, source, env: (target, source + [env.Value(env["IMAGE_SEED"])]))
    # Commands the user runs (always, never "up to date"): scons map, run, debug.
    env["BUILDERS"]["ShowMap"] = SCons.Builder.Builder(action=SCons.Action.Action(_map_action, None))
    env["BUILDERS"]["Qemu"] = SCons.Builder.Builder(action=SCons.Action.Action(_qemu_action, None))
    env.SetDefault(TEMPLATE_DIRS=[], C_PIE=False, C_SHAPE="", QEMU_GDB=False)


def exists(env: Any) -> bool:
    return True
