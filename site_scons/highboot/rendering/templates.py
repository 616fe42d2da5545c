"""One Jinja environment for every generated source, and the template dependency scan.

A project's template directories go in front of highboot's defaults; an override can
``{% extends "base:loader/plan.rs.j2" %}`` the default it replaces.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
import jinja2.meta
from jinja2.loaders import split_template_path

from highboot.errors import HighbootError
from highboot.inputs.paths import TEMPLATE, read_text
from highboot.units import text_bytes

DEFAULT_TEMPLATES = Path(__file__).resolve().parents[3] / "templates"


class Code(str):
    """Text a filter made for one target language (a literal, a number): printed as it is.

    Every other string a template prints goes through comment_safe(), whatever the template: a
    user's string printed raw (a layout name in a comment, say) can never end a comment, open
    one, splice a line or make a global_asm! placeholder, in Rust, assembly, C or a linker script."""


def comment_safe(text: str) -> str:
    """Printable ASCII, and anything else as <U+XXXX>: also \\ (a C line splice), { and } (Rust's
    global_asm! reads them in trampoline.S, comments included), and the / of /* and */."""
    out = "".join(c if 32 <= ord(c) < 127 and c not in "\\{}" else f"<U+{ord(c):04X}>" for c in text)
    return out.replace("*/", "*<U+002F>").replace("/*", "<U+002F>*")


def _finalize(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, Code):
        return comment_safe(value)
    return value


def _hex(value: int, width: int = 0) -> Code:
    value &= (1 << 64) - 1
    return Code(f"0x{value:0{width}x}" if width else f"{value:#x}")


def _rust_hex(value: int) -> Code:
    """A u64 literal with _ every 4 digits (clippy's unreadable_literal stays quiet)."""
    digits = f"{value & ((1 << 64) - 1):x}"
    groups = []
    while digits:
        groups.insert(0, digits[-4:])
        digits = digits[:-4]
    return Code("0x" + "_".join(groups))


def _ucs2(text: str) -> Code:
    """Comma-separated UTF-16 code units of text plus a NUL (for UEFI CHAR16 strings)."""
    units = list(text.encode("utf-16-le", "surrogatepass"))
    words = [units[i] | (units[i + 1] << 8) for i in range(0, len(units), 2)]
    return Code(", ".join(str(w) for w in [*words, 0]))


def _bytes(text: str) -> Code:
    """Comma-separated bytes of text plus a NUL (a C string's bytes, for a u8 array)."""
    return Code(", ".join(str(b) for b in [*text_bytes(text), 0]))


def _c_string(text: str) -> Code:
    """A C string literal: printable ASCII as is, every other byte as an octal escape (a hex escape
    would swallow the hex digits after it)."""
    return Code('"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else f"\\{b:03o}"
                              for b in text_bytes(text)) + '"')


def _rust_str(text: str) -> Code:
    """A Rust string literal: printable ASCII as is, everything else as \\u{...} escapes; a string
    that is not Unicode (bytes from the command line) is refused, as Rust's str cannot hold it."""
    if any(0xD800 <= ord(c) < 0xE000 for c in text):
        raise HighbootError(f"{comment_safe(text)!r} is not valid UTF-8; expected text")
    return Code('"' + "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else f"\\u{{{ord(c):x}}}"
                              for c in text) + '"')


class TemplateDirLoader(jinja2.BaseLoader):
    """Templates from one directory, read through highboot.inputs: a template that is a directory,
    a FIFO or a device, that is too large or not UTF-8, is a HighbootError naming the file (jinja2's
    FileSystemLoader would silently fall through to the next loader, i.e. ignore a project's
    override, or block on a FIFO)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Any]:
        candidate = Path(self.directory, *split_template_path(template))
        if not os.path.lexists(candidate):
            raise jinja2.TemplateNotFound(template)
        if candidate.is_dir():
            raise HighbootError("expected a template file, found a directory", file=candidate)
        source = read_text(candidate, TEMPLATE)
        mtime = os.path.getmtime(candidate)
        return source, str(candidate), lambda: os.path.exists(candidate) and os.path.getmtime(candidate) == mtime


def make_environment(project_dirs: Sequence[str | Path] = ()) -> jinja2.Environment:
    defaults = TemplateDirLoader(str(DEFAULT_TEMPLATES))
    loaders: list[jinja2.BaseLoader] = [TemplateDirLoader(str(d)) for d in project_dirs]
    loaders.append(jinja2.PrefixLoader({"base": defaults}, delimiter=":"))
    loaders.append(defaults)
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        finalize=_finalize,
    )
    env.filters.update(hex=_hex, rust_hex=_rust_hex, ucs2=_ucs2, cbytes=_bytes, c_string=_c_string,
                       rust_str=_rust_str, comment=comment_safe)
    return env


def template_files(project_dirs: Sequence[str | Path], name: str) -> list[Path]:
    """The file a template name resolves to, and every file it extends, includes or imports."""
    env = make_environment(project_dirs)
    seen: dict[str, Path] = {}
    pending: list[tuple[str, str | None]] = [(name, None)]  # (template, the file that refers to it)
    while pending:
        current, referrer = pending.pop()
        if current in seen:
            continue
        try:
            source, filename, _ = env.loader.get_source(env, current)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound:
            used_by = f" (used by {referrer})" if referrer else ""
            raise HighbootError(f"template not found in {_search_path(project_dirs)}{used_by}", file=current) from None
        except OSError as exc:
            raise HighbootError(f"cannot read template: {exc.strerror}", file=current) from None
        seen[current] = Path(filename or current)
        try:
            ast = env.parse(source, current, filename)
        except jinja2.TemplateSyntaxError as exc:
            raise HighbootError(f"template syntax error: {exc.message}", file=filename,
                                field=f"line {exc.lineno}") from None
        for name, optional in _references(ast, filename or current):
            if optional and not _exists(env, name):
                continue  # {% include ... ignore missing %}: tracked by template_search below
            pending.append((name, filename))
    return sorted(set(seen.values()))


def _references(ast: jinja2.nodes.Template, filename: str) -> list[tuple[str, bool]]:
    """The templates a template extends, includes or imports: (name, ignore missing). A name computed
    while rendering cannot be known here, so a change to the template it names could go unseen: it
    is refused."""
    out = []
    for node in ast.find_all((jinja2.nodes.Extends, jinja2.nodes.Include, jinja2.nodes.Import,
                              jinja2.nodes.FromImport)):
        names = node.template.items if isinstance(node.template, (jinja2.nodes.Tuple, jinja2.nodes.List)) else [
            node.template]
        for name in names:
            if not isinstance(name, jinja2.nodes.Const) or not isinstance(name.value, str):
                raise HighbootError("a template named by an expression cannot be tracked (a change to it would go "
                                    "unseen); name it as a string", file=filename, field=f"line {node.lineno}")
            out.append((name.value, getattr(node, "ignore_missing", False) or len(names) > 1))
    return out


def _exists(env: jinja2.Environment, name: str) -> bool:
    try:
        env.loader.get_source(env, name)  # type: ignore[union-attr]
    except jinja2.TemplateNotFound:
        return False
    return True


def template_search(project_dirs: Sequence[str | Path], name: str) -> list[str]:
    """Where each template that `name` uses, or could use, would be found: the directories searched and
    which files exist there. A template that appears in a project directory (an override, or an
    optional include) changes this, and so rebuilds what uses it."""
    dirs = [*map(str, project_dirs), str(DEFAULT_TEMPLATES)]
    env = make_environment(project_dirs)
    names: set[str] = {name}
    for f in template_files(project_dirs, name):
        try:
            ast = env.parse(Path(f).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, jinja2.TemplateSyntaxError):
            continue  # template_files has said what is wrong with it
        names.update(n for n, _ in _references(ast, str(f)))
    return [f"{d}/{n}" for n in sorted(names) for d in dirs if os.path.lexists(Path(d, *n.split("/")))]


def _search_path(project_dirs: Iterable[str | Path]) -> str:
    return ", ".join([*(str(d) for d in project_dirs), str(DEFAULT_TEMPLATES)])


def render(project_dirs: Sequence[str | Path], name: str, context: dict[str, Any]) -> str:
    env = make_environment(project_dirs)
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise HighbootError(f"template {exc.name!r} not found in {_search_path(project_dirs)}",
                            file=_resolve(env, name)) from None
    except jinja2.TemplateSyntaxError as exc:
        raise HighbootError(f"template syntax error: {exc.message}", file=exc.filename or name,
                            field=f"line {exc.lineno}") from None
    except jinja2.UndefinedError as exc:
        raise HighbootError(f"template uses an undefined variable: {exc.message}", file=_resolve(env, name)) from None
    except OSError as exc:
        raise HighbootError(f"cannot read template: {exc.strerror}", file=exc.filename or name) from None
    except HighbootError as exc:  # a filter refused a value: say in which template and line
        file, line = _template_frame(exc.__traceback__, _resolve(env, name))
        raise HighbootError(exc.message, file=file, field=line) from None
    except Exception as exc:  # noqa: BLE001 - a template's own expression failed: 1 // 0, a wrong type
        file, line = _template_frame(exc.__traceback__, _resolve(env, name))
        raise HighbootError(f"template failed while rendering: {type(exc).__name__}: {exc}", file=file,
                            field=line) from None


def _template_frame(tb: TracebackType | None, default: str) -> tuple[str, str | None]:
    """The innermost template file and line in a traceback (jinja2 puts template frames in it)."""
    found: tuple[str, str | None] = (default, None)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            found = (filename, f"line {tb.tb_lineno}")
        tb = tb.tb_next
    return found


def _resolve(env: jinja2.Environment, name: str) -> str:
    try:
        return env.loader.get_source(env, name)[1] or name  # type: ignore[union-attr]
    except (jinja2.TemplateNotFound, OSError):
        return name


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write through a temporary file and rename, so no half-written output is ever left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text_bytes(text) if isinstance(text, str) else text  # a path's non-UTF-8 bytes stay as they were
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
