"""SCons tool: wires highboot's build steps (site_scons/highboot) into builders. No logic here."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import SCons.Action
import SCons.Builder
import SCons.Errors
import SCons.Script

from highboot.build import steps as build
from highboot.errors import HighbootError
from highboot.inputs.layout import load_layout
from highboot.inputs.modules import module_esp_file, write_pattern
from highboot.options.config import C_KERNEL, SHARED_RUST, BuildConfig, plan_inputs
from highboot.packaging.signing import ensure_keys
from highboot.planning.planner import KERNEL_ESP_FILE, LOADER_ESP_FILE
from highboot.rendering.templates import template_files, template_search
from highboot.units import parse_int

#: The generator's package: highboot. (A test render names its own generator's files in RENDER_DEPS.)
PACKAGE_DIRS = [Path(build.__file__).resolve().parents[1]]


@dataclass(frozen=True)
class BootBuild:
    """What one configuration's graph ends in (SCons nodes)."""

    nodes: list[Any]  # everything to build: the ESP's files, the signed loader's VARS file, highboot.h, link scripts
    # (and a test kernel's report files)
    esp: list[Any]  # the ESP's files, installed together
    plan: list[Any]  # plan.json
    kernel: Any  # the kernel ELF
    esp_dir: str
    secure_vars: str | None = None  # a signed loader's OVMF VARS file, its key enrolled (None: not signed)


def _fail(target: Any, exc: HighbootError) -> SCons.Errors.BuildError:
    # The same "highboot: error:" as every other refusal, after SCons's "scons: *** [target]".
    return SCons.Errors.BuildError(node=target[0], errstr=f"highboot: error: {exc.format()}", status=2, exitstatus=2)


def _package_deps(env: Any) -> list[Any]:
    """Generated files depend on the generator (SCons only fingerprints an action's own bytecode)."""
    return [env.File(str(p)) for d in PACKAGE_DIRS for p in sorted(d.rglob("*.py"))]


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
    # RENDER_CONTEXT: a function giving more of the context (a test render's description), whose
    # module's files are in RENDER_DEPS.
    extra = {**env.get("RENDER_EXTRA", {}), **(env["RENDER_CONTEXT"]() if env.get("RENDER_CONTEXT") else {})}
    try:
        build.render_file(env["TEMPLATE_DIRS"], env["TEMPLATE"], str(target[0]), plan, extra)
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
    # Files as named (SCons's File() would expand a $ in a project's path).
    env.Depends(target, [env.fs.File(os.path.abspath(f)) for f in files] + _package_deps(env)
                + list(env.get("RENDER_DEPS", [])))
    key = {"template": env["TEMPLATE"], "dirs": list(env["TEMPLATE_DIRS"]), "extra": env.get("RENDER_EXTRA", {}),
           "found": template_search(env["TEMPLATE_DIRS"], env["TEMPLATE"])}
    return target, source + [env.Value(json.dumps(key, sort_keys=True, default=str))]


def _cargo_action(target: Any, source: Any, env: Any) -> None:
    try:
        build.cargo_build(env["HIGHBOOT_RUST"], env["CARGO_CRATE"], env["CARGO_TARGET"], env["CARGO_TARGET_DIR"],
                          env["CARGO_ARTIFACT"], str(target[0]), env.get("CARGO_ENV", {}),
                          env.get("CARGO_RUSTFLAGS", []), bool(env.get("VERBOSE")),
                          build.loader_features(env["CARGO_PLAN"]) if env.get("CARGO_PLAN") else None)
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _cargo_emitter(target: Any, source: Any, env: Any) -> tuple[Any, Any]:
    crate = env.Dir(env["CARGO_CRATE"])
    # Every source of the crate, in src/ and its folders (loader/src/protocols/...).
    files = [crate.File("Cargo.toml")] + [env.File(str(p)) for p in sorted(Path(crate.abspath, "src").rglob("*.rs"))]
    files += env.Glob(f"{crate}/build.rs")
    if env.get("CARGO_PLAN"):
        files.append(env.File(env["CARGO_PLAN"]))
    lock = crate.File("Cargo.lock")
    if lock.exists():
        files.append(lock)
    if env["CARGO_TARGET"].endswith(".json"):  # a target spec: its options (link arguments...) shape the binary
        files.append(env.File(env["CARGO_TARGET"]))
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


def _limine_kernel_command(target: Any, source: Any, env: Any) -> list[str]:
    # source: kernel.c, link.ld, then the rendered headers.
    return build.limine_kernel_command(str(source[0]), str(target[0]), env["C_INCLUDE"], str(source[1]),
                                       env["LIMINE_SHAPE"], env["LIMINE_DEFINES"])


def _limine_kernel_action(target: Any, source: Any, env: Any) -> None:
    try:
        build.compile_limine_kernel(_limine_kernel_command(target, source, env), str(source[0]),
                                    bool(env.get("VERBOSE")))
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _limine_kernel_emitter(target: Any, source: Any, env: Any) -> tuple[Any, Any]:
    # The whole command is the build's key: a flag changed in highboot.build.steps rebuilds the kernel.
    try:
        command = _limine_kernel_command(target, source, env)
    except HighbootError as exc:
        _stop(exc)
    return target, source + [env.Value(json.dumps(command))]


def _pattern_action(target: Any, source: Any, env: Any) -> None:
    write_pattern(str(target[0]), env["PATTERN_SEED"], env["PATTERN_SIZE"])


def _install_esp_action(target: Any, source: Any, env: Any) -> None:
    # source: the ESP's files, in target's order, then plan.json.
    esp = env["ESP_DIR"]
    try:
        build.install_esp(esp, [(str(s), os.path.relpath(str(t), esp)) for s, t in zip(source, target, strict=False)],
                          str(source[-1]))
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _sign_action(target: Any, source: Any, env: Any) -> None:
    # source: the checked loader, the db key, its certificate.
    try:
        build.sign_loader(str(source[0]), str(target[0]), str(target[1]), str(source[1]), str(source[2]))
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _image_action(target: Any, source: Any, env: Any) -> None:
    from highboot.packaging.image import build_image

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
                              secure_vars=env.get("SECURE_VARS"), smp=env.get("QEMU_SMP", 1),
                              extra=list(env.get("QEMU_EXTRA", ())))
    except HighbootError as exc:
        raise _fail(target, exc) from None


def _stop(exc: HighbootError) -> NoReturn:
    """A refusal while the SConstruct is read: one message, exit 2 (as SConstruct's own checks)."""
    print(f"highboot: error: {exc.format()}", file=sys.stderr)
    SCons.Script.Exit(2)


def _test_report(env: Any, out: str) -> list[Any]:
    """The tests' report files a test kernel is built with (gen/report.rs, include/highboot_report.h).
    testkit's own SCons tool renders them; SConstruct loads it only for builds that make a test
    kernel, and the product never imports testkit."""
    report_files = getattr(env, "HighbootTestReport", None)
    if report_files is None:
        _stop(HighbootError("building a test kernel (the sample kernel, a C test kernel) needs the tests' report "
                            "files: load testkit's SCons tool (site_scons/testkit/testkit_tool.py)", field="KERNEL"))
    return report_files(out)


def _boot_build(env: Any, out: str, cfg: BuildConfig, shape_kernels: dict[str, Any] | None = None) -> BootBuild:
    """Every step from kernel + layout to an ESP under `out`, for one configuration."""
    try:
        layout = load_layout(cfg.layout)
        base = parse_int(cfg.kernel_base) if cfg.kernel_base else None
    except HighbootError as exc:
        _stop(exc)
    except ValueError as exc:
        _stop(HighbootError(f"{exc}", field="KERNEL_BASE"))
    cargo_dir = env["HIGHBOOT_CARGO_DIR"]
    tenv = env.Clone(TEMPLATE_DIRS=list(cfg.templates))
    gen = tenv.Dir(f"{out}/gen")
    common = tenv.HighbootRender(f"{out}/gen/bootinfo.rs", [], TEMPLATE="common/bootinfo.rs.j2")
    header = tenv.HighbootRender(f"{out}/include/highboot.h", [], TEMPLATE="include/highboot.h.j2")
    # Every protocol's kernel sources (a kernel of this build is built before the build knows its protocol).
    header += tenv.HighbootRender(f"{out}/include/highboot-limine.h", [], TEMPLATE="include/highboot-limine.h.j2")
    # Linker scripts for this layout, at the kernel base, for every build (a kernel of the user's
    # own is linked with one of them): link.ld for position-independent kernels (PT_DYNAMIC, RELRO),
    # link-fixed.ld for kernels linked to run at that address (-no-pie).
    link_base = layout.require("kernel").start if base is None else base
    scripts = {pie: tenv.HighbootRender(f"{out}/gen/{name}", [], TEMPLATE="kernel/link.ld.j2",
                                        RENDER_EXTRA={"layout": {"name": layout.name}, "entry_symbol": "_start",
                                                      "link_base": link_base, "pie": pie})
               for pie, name in ((True, "link.ld"), (False, "link-fixed.ld"))}
    test_report: list[Any] = []
    if cfg.shape_kernel:
        kernel = (shape_kernels or {})[cfg.shape_kernel]
    elif cfg.limine_shape:
        # The Limine sample kernel (tests): its own linker script and report, linked at 0 or at the
        # top 2 GiB as its shape says; the build places it like any kernel given with KERNEL=.
        kernel = tenv.LimineKernel(f"{out}/kernel/kernel.elf",
                                   [build.LIMINE_KERNEL, build.LIMINE_LINKER_SCRIPT] + header,
                                   C_INCLUDE=f"{out}/include", LIMINE_SHAPE=cfg.limine_shape,
                                   LIMINE_DEFINES=cfg.limine_defines)[0]
    elif cfg.kernel:
        kernel = tenv.fs.File(os.path.abspath(cfg.kernel))
    else:
        base = link_base
        lds = scripts[not cfg.c_source or cfg.c_pie]
        # A test kernel (Rust or C): both report files, so a C kernel built by hand finds its header too.
        test_report = _test_report(tenv, out)
        if cfg.c_source:
            kernel = tenv.CKernel(f"{out}/kernel/kernel.elf", [cfg.c_source] + lds + header + test_report,
                                  C_INCLUDE=f"{out}/include", C_PIE=cfg.c_pie)[0]
        else:
            kernel = tenv.Cargo(
                f"{out}/kernel/kernel.elf", lds + common + test_report + [SHARED_RUST],
                CARGO_CRATE="kernel", CARGO_TARGET="x86_64-unknown-none",
                CARGO_TARGET_DIR=f"{cargo_dir}/kernel", CARGO_ARTIFACT="highboot-sample-kernel",
                # Position-independent (static-pie): the same kernel boots with and without KASLR.
                CARGO_RUSTFLAGS=["-Crelocation-model=pie"],
                CARGO_ENV={"HIGHBOOT_GEN": gen.abspath, "HIGHBOOT_LINKER_SCRIPT": tenv.File(lds[0]).abspath,
                           "HIGHBOOT_LINK_BASE": hex(base)})[0]
    plan_options = plan_inputs(cfg, base)
    # Files the user named are taken as named: SCons's own File() would expand $ and # in them.
    modules = [tenv.fs.File(os.path.abspath(m.path)) for m in cfg.modules]
    layout_file = tenv.fs.File(os.path.abspath(cfg.layout))
    plan = tenv.HighbootPlan(f"{out}/plan.json", [kernel, layout_file] + modules, PLAN_OPTIONS=plan_options)
    # Written atomically; kept when planning fails, so the ESP from before keeps the plan it was built from.
    tenv.Precious(plan)
    loader_src = [tenv.HighbootRender(f"{out}/gen/{name}", plan, TEMPLATE=f"loader/{name}.j2", RENDER_WITH_PLAN=True)
                  for name in ("plan.rs", "trampoline.S", "protocol.rs")]
    loader_src += tenv.HighbootRender(f"{out}/gen/abi.rs", [], TEMPLATE="loader/abi.rs.j2")
    loader = tenv.Cargo(
        f"{out}/loader/highboot-loader.efi", loader_src + common,
        CARGO_CRATE="loader", CARGO_TARGET=tenv.File("loader/x86_64-highboot-uefi.json").abspath,
        CARGO_TARGET_DIR=f"{cargo_dir}/loader", CARGO_ARTIFACT="highboot-loader.efi",
        CARGO_ENV={"HIGHBOOT_GEN": gen.abspath}, CARGO_PLAN=tenv.File(plan[0]).abspath)
    esp_dir = f"{out}/esp"
    bootx64 = tenv.PECheck(f"{out}/loader/BOOTX64.EFI", loader)
    secure_vars = None
    if cfg.sign:
        secure_vars = tenv.File(f"{out}/secure-vars.fd").abspath
        key, cert = cfg.keys or (env["SIGN_KEY"], env["SIGN_CERT"])
        if not (env.GetOption("clean") or env.GetOption("help") or env.GetOption("no_exec")):
            try:
                ensure_keys(key, cert)  # made on first use, now: the build reads them like any input
            except HighbootError as exc:
                _stop(exc)
        bootx64 = tenv.SignLoader([f"{out}/loader/BOOTX64.signed.EFI", secure_vars],
                                  [bootx64[0], tenv.fs.File(os.path.abspath(key)), tenv.fs.File(os.path.abspath(cert))])
    # The ESP is replaced whole once every part of it is built (build.install_esp): a failed or killed
    # build never leaves a loader beside a kernel or a module it was not built for. SCons must not
    # delete the old files first.
    esp = tenv.InstallESP([f"{esp_dir}/{LOADER_ESP_FILE}", f"{esp_dir}/{KERNEL_ESP_FILE}"]
                          + [f"{esp_dir}/{module_esp_file(i)}" for i in range(len(modules))],
                          [bootx64[0], kernel] + modules + plan, ESP_DIR=esp_dir)
    tenv.Precious(esp)
    return BootBuild(nodes=esp + bootx64[1:] + header + test_report + scripts[True] + scripts[False], esp=esp,
                     plan=plan, kernel=kernel, esp_dir=esp_dir, secure_vars=secure_vars)


def _shape_kernels(env: Any, out: str) -> dict[str, Any]:
    """The toolchain-shaped test kernels, each built once: PIEs linked at 0 that the build places."""
    senv = env.Clone(TEMPLATE_DIRS=[])
    common = senv.HighbootRender(f"{out}/gen/bootinfo.rs", [], TEMPLATE="common/bootinfo.rs.j2")
    header = senv.HighbootRender(f"{out}/include/highboot.h", [], TEMPLATE="include/highboot.h.j2")
    test_report = _test_report(senv, out)
    kernels = {shape: senv.CKernel(f"{out}/{shape}/kernel.elf", [C_KERNEL] + header + test_report,
                                   C_INCLUDE=f"{out}/include", C_SHAPE=shape)[0] for shape in build.C_SHAPES}
    # The Rust kernel from a JSON target spec like real Rust kernels use (ld.lld, PIE, full RELRO);
    # unwind tables on, as with "panic-strategy": "unwind", so it has PT_GNU_EH_FRAME.
    spec = senv.File("kernel/x86_64-highboot-pie.json")
    kernels["rust-spec"] = senv.Cargo(
        f"{out}/rust-spec/kernel.elf", common + test_report + [spec, SHARED_RUST],
        CARGO_CRATE="kernel", CARGO_TARGET=spec.abspath, CARGO_TARGET_DIR=f"{env['HIGHBOOT_CARGO_DIR']}/kernel-spec",
        CARGO_ARTIFACT="highboot-sample-kernel", CARGO_RUSTFLAGS=["-Cforce-unwind-tables=yes"],
        CARGO_ENV={"HIGHBOOT_GEN": senv.Dir(f"{out}/gen").abspath})[0]
    return kernels


#: The kernel test's boots and summary, by target path: what each action runs (plain Python
#: objects, kept out of the environment SCons would substitute and sign).
_KERNEL_TESTS: dict[str, Any] = {}


def _kernel_boot_action(target: Any, source: Any, env: Any) -> int:
    from highboot.testing.session import boot_and_record

    esp, boot, table, results, secure_vars = _KERNEL_TESTS[target[0].abspath]
    try:
        boot_and_record(esp, boot, table, results, secure_vars)
    except HighbootError as exc:
        raise _fail(target, exc) from None
    return 0


def _kernel_summary_action(target: Any, source: Any, env: Any) -> int:
    from highboot.testing.session import summarize

    boots, table, results, shard, suite = _KERNEL_TESTS[target[0].abspath]
    return 0 if summarize(boots, table, results, shard, suite) else 1


def _machine_build(env: Any, build_dir: str, machines: list[tuple[Any, Any]], machine: Any,
                   builds: dict[Any, BootBuild]) -> BootBuild:
    """A [test] machine's build: once per distinct configuration (`builds` holds those in the graph),
    in $BUILD_DIR/test/<the first machine that has it>."""
    cfg = next(c for m, c in machines if m.name == machine.name)
    if cfg not in builds:
        first = next(m for m, c in machines if c == cfg)
        builds[cfg] = _boot_build(env, f"{build_dir}/test/{first.name}", cfg)
    return builds[cfg]


def _kernel_tests(env: Any, build_dir: str, machines: list[tuple[Any, Any]], table: Any,
                  shard: tuple[int, int] | None, suite: str, builds: dict[Any, BootBuild],
                  only: str | None = None) -> list[Any]:
    """scons test of a project's kernel: each machine's build, a boot node per boot of this slice (of
    machine `only`'s boots, when given), the summary."""
    from highboot.testing.results import result_file
    from highboot.testing.table import boots as all_boots
    from highboot.testing.table import shard as slice_of

    results = env.Dir(f"{build_dir}/test-results").abspath
    mine = slice_of([b for b in all_boots(table) if only in (None, b.machine.name)], shard)
    nodes = []
    for boot in mine:
        built = _machine_build(env, build_dir, machines, boot.machine, builds)
        node = env.Command(str(result_file(results, boot.name)), built.nodes,
                           SCons.Action.Action(_kernel_boot_action, None))
        _KERNEL_TESTS[node[0].abspath] = (env.Dir(built.esp_dir).abspath, boot, table, results, built.secure_vars)
        env.AlwaysBuild(node)
        nodes += node
    summary = env.Command("test.phony", nodes, SCons.Action.Action(_kernel_summary_action, None))
    _KERNEL_TESTS[summary[0].abspath] = (mine, table, results, shard, suite)
    env.AlwaysBuild(summary)
    return summary


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
    env["BUILDERS"]["LimineKernel"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_limine_kernel_action, "Compiling $TARGET (gcc, Limine sample kernel)"),
        emitter=_limine_kernel_emitter)
    env["BUILDERS"]["PatternModule"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_pattern_action, "Generating $TARGET (test module)",
                                   varlist=["PATTERN_SEED", "PATTERN_SIZE"]))
    env["BUILDERS"]["InstallESP"] = SCons.Builder.Builder(
        action=action(_install_esp_action, "Installing the ESP: $TARGETS"))
    env["BUILDERS"]["SignLoader"] = SCons.Builder.Builder(
        action=action(_sign_action, "Signing $TARGET (sbsign) and enrolling the key in $TARGETS"))
    env["BUILDERS"]["DiskImage"] = SCons.Builder.Builder(
        action=action(_image_action, "Packing $TARGET (GPT, FAT32 EFI System Partition)"),
        emitter=lambda target, source, env: (target, source + [env.Value(env["IMAGE_SEED"])]))
    # Commands the user runs (always, never "up to date"): scons map, run, debug.
    env["BUILDERS"]["ShowMap"] = SCons.Builder.Builder(action=SCons.Action.Action(_map_action, None))
    env["BUILDERS"]["Qemu"] = SCons.Builder.Builder(action=SCons.Action.Action(_qemu_action, None))
    # Pseudo-builders: one configuration's whole graph, and the shared toolchain-shaped test kernels.
    env.AddMethod(_boot_build, "HighbootBoot")
    env.AddMethod(_shape_kernels, "HighbootShapeKernels")
    env.AddMethod(_kernel_tests, "HighbootKernelTests")
    env.AddMethod(_machine_build, "HighbootMachineBuild")
    env.SetDefault(TEMPLATE_DIRS=[], C_PIE=False, C_SHAPE="", QEMU_GDB=False)


def exists(env: Any) -> bool:
    return True
