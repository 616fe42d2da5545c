"""A Limine kernel's requests, found at build time the way a Limine loader finds them at boot: in
the loaded image (relocations applied: a PIE linked by ld.lld keeps its pointers only in its
relocation addends), 8-byte aligned, before the trailing zero-fill; only after the last start
marker and before the first end marker. What Limine would ignore or panic on is refused here with
the request and its address named: a request outside the markers, one that runs past the image, a
second request of one ID, a second base revision tag.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from highboot.errors import HighbootError
from highboot.inputs.kernel import KernelImage, LoadedImage
from highboot.protocols.limine import spec
from highboot.units import hex_addr


@dataclass(frozen=True)
class FoundRequest:
    """One request in the kernel: at `vaddr` (link address), of request revision `revision`."""

    id: tuple[int, int]
    vaddr: int
    revision: int
    #: The request's own fields (its revision's), as the loaded image holds them (pointers at link addresses).
    fields: tuple[tuple[str, int], ...] = ()

    @property
    def known(self) -> spec.Request | None:
        return spec.BY_ID.get(self.id)

    @property
    def name(self) -> str:
        return self.known.name if self.known else f"unknown {self.id[0]:#018x} {self.id[1]:#018x}"

    def field(self, name: str) -> int:
        return dict(self.fields)[name]


@dataclass(frozen=True)
class InternalModule:
    """A module the kernel names in its module request (request revision 1)."""

    path: str
    string: str
    flags: int

    @property
    def required(self) -> bool:
        return bool(self.flags & spec.INTERNAL_MODULE_REQUIRED)


@dataclass(frozen=True)
class LimineKernel:
    """What a Limine kernel asks for."""

    base_revision: int  # asked for (0 without a tag)
    tag_vaddr: int | None  # the base revision tag's address
    markers: tuple[int | None, int | None]  # the start and end markers' addresses
    requests: tuple[FoundRequest, ...]
    internal_modules: tuple[InternalModule, ...] = ()

    def request(self, name: str) -> FoundRequest | None:
        return next((r for r in self.requests if r.known and r.known.name == name), None)


def _bytes(words: tuple[int, ...]) -> bytes:
    return struct.pack(f"<{len(words)}Q", *words)


_TAG = _bytes(spec.BASE_REVISION_MAGIC)
_REQUEST = _bytes(spec.COMMON_MAGIC)
_START = _bytes(spec.REQUESTS_START_MARKER)
_END = _bytes(spec.REQUESTS_END_MARKER)


def carries_marks(kernel: KernelImage) -> bool:
    """Whether the kernel carries any Limine mark: a base revision tag, a marker, a request ID."""
    image = kernel.initialised_image()
    return any(image.find_aligned(p) for p in (_TAG, _START, _END, _REQUEST))


def scan(kernel: KernelImage) -> LimineKernel:
    """The kernel's requests, or one HighbootError naming the file, the request and its address."""
    image = kernel.initialised_image()
    start_va = image.start

    def refuse(message: str, where: int | None = None) -> HighbootError:
        field = f"Limine request at {hex_addr(start_va + where)}" if where is not None else "Limine requests"
        return HighbootError(message, file=kernel.path, field=field)

    def words(at: int, count: int) -> tuple[int, ...]:
        return struct.unpack(f"<{count}Q", image.read(at, 8 * count))

    starts, ends = image.find_aligned(_START), image.find_aligned(_END)
    first = starts[-1] + 32 if starts else 0
    end = ends[0] if ends else image.size
    if ends and starts and ends[0] < starts[-1]:
        raise refuse("the requests' end marker comes before their start marker", ends[0])
    inside = range(first, end)

    tags = [t for t in image.find_aligned(_TAG) if t in inside]
    if len(tags) > 1:
        raise refuse(f"a second base revision tag (the first is at {hex_addr(start_va + tags[0])})", tags[1])
    tag = tags[0] if tags else None
    if tag is not None and tag + 24 > end:
        raise refuse("the base revision tag runs past the end of the requests", tag)
    base_revision = words(tag, 3)[2] if tag is not None else 0

    found: list[FoundRequest] = []
    seen: dict[tuple[int, int], int] = {}
    for at in image.find_aligned(_REQUEST):
        if at not in inside:
            where = "before the start marker" if at < first else "after the end marker"
            raise refuse(f"a request {where} (a Limine loader ignores it: move it between the markers)", at)
        if at + 48 > end:
            raise refuse(f"a request runs past the end of the {'requests' if ends else 'loaded image'} (48 bytes "
                         f"needed, {end - at} there)", at)
        id2, id3, revision = words(at + 16, 3)
        rid = (id2, id3)
        if rid in seen:
            raise refuse(f"a second request with the ID of the one at {hex_addr(start_va + seen[rid])} "
                         f"({spec.BY_ID[rid].name if rid in spec.BY_ID else 'unknown'}); a Limine loader refuses "
                         f"duplicates", at)
        seen[rid] = at
        known = spec.BY_ID.get(rid)
        fields: tuple[tuple[str, int], ...] = ()
        if known:
            size = known.size_for(revision)
            if at + size > end:
                raise refuse(f"the {known.name} request (revision {revision}) needs {size} bytes; "
                             f"{end - at} are left before the end of the {'requests' if ends else 'loaded image'}",
                             at)
            offsets = known.request.offsets()
            since = dict(known.since)
            fields = tuple((f.name, int.from_bytes(image.read(at + offsets[f.name], f.size), "little"))
                           for f in known.extra if since.get(f.name, 0) <= revision)
        found.append(FoundRequest(rid, start_va + at, revision, fields))
    if len(found) > spec.MAX_REQUESTS:
        raise refuse(f"{len(found)} requests; a Limine loader takes at most {spec.MAX_REQUESTS}")
    kernel_marks = LimineKernel(base_revision, start_va + tag if tag is not None else None,
                                (start_va + starts[-1] if starts else None, start_va + ends[0] if ends else None),
                                tuple(found))
    return _with_internal_modules(kernel_marks, start_va, image, refuse)


def _with_internal_modules(marks: LimineKernel, start_va: int, image: LoadedImage, refuse) -> LimineKernel:  # noqa: ANN001
    module = marks.request("module")
    if module is None or module.revision < 1 or module.field("internal_module_count") == 0:
        return marks
    count, array = module.field("internal_module_count"), module.field("internal_modules")
    at = module.vaddr - start_va

    def inside(va: int, size: int, what: str) -> int:
        off = va - start_va
        if not (0 <= off and off + size <= image.size):
            raise refuse(f"the module request's {what} ({hex_addr(va)}, {size} bytes) is not in the loaded image", at)
        return off

    def string(va: int, what: str) -> str:
        off = inside(va, 1, what)
        text = image.read(off, min(4096, image.size - off))
        nul = text.find(b"\0")
        if nul < 0:
            raise refuse(f"the module request's {what} at {hex_addr(va)} has no NUL in 4096 bytes", at)
        try:
            return text[:nul].decode("ascii")
        except UnicodeDecodeError:
            raise refuse(f"the module request's {what} at {hex_addr(va)} is not ASCII", at) from None

    if count > spec.MAX_REQUESTS:
        raise refuse(f"the module request names {count} internal modules; highboot takes at most "
                     f"{spec.MAX_REQUESTS}", at)
    pointers = inside(array, 8 * count, "internal_modules array")
    modules = []
    for n in range(count):
        record_va = int.from_bytes(image.read(pointers + 8 * n, 8), "little")
        rec = inside(record_va, spec.INTERNAL_MODULE.size, f"internal module {n}")
        path_va, string_va, flags = struct.unpack("<3Q", image.read(rec, 24))
        if flags & ~(spec.INTERNAL_MODULE_REQUIRED | spec.INTERNAL_MODULE_COMPRESSED):
            raise refuse(f"internal module {n} has unknown flags {flags:#x}", at)
        if flags & spec.INTERNAL_MODULE_COMPRESSED:
            raise refuse(f"internal module {n} is marked compressed; highboot loads modules as they are "
                         f"(decompress it in the build)", at)
        modules.append(InternalModule(string(path_va, f"internal module {n}'s path"),
                                      string(string_va, f"internal module {n}'s string") if string_va else "", flags))
    return LimineKernel(marks.base_revision, marks.tag_vaddr, marks.markers, marks.requests, tuple(modules))
