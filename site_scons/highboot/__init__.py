"""highboot: plan a higher-half kernel's address space at build time, patch it at boot.

The package holds all of highboot's logic and runs and is tested without SCons;
``site_scons/site_tools`` only wires it into builds. Its rooms, in the order a build uses them:

- ``options``: what the user asks for (the options schema, the project file, the typed build config);
- ``inputs``: reading what the user brings (any path's check, the kernel ELF and its relocations,
  layouts, modules and their fs-verity digests);
- ``planning``: the address space (the planner's phases, page tables and their walker, the map);
- ``protocols``: what the kernel is handed and how (the boot info ABI);
- ``rendering``: Jinja templates and the loader's own binary contracts;
- ``build``: the steps SCons runs, its records, the Rust toolchain;
- ``packaging``: PE checks, Secure Boot signing, the disk image;
- ``booting``: QEMU and OVMF.

``errors`` and ``units`` are shared by every room. The tests' report format and configurations live
in ``site_scons/testkit``, which the product does not need.
"""

from highboot.errors import HighbootError

__all__ = ["HighbootError"]
__version__ = "0.1.0"
