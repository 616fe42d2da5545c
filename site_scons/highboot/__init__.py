"""highboot: plan a higher-half kernel's address space at build time, patch it at boot.

The package holds all of highboot's logic (kernel ELF reading, layouts, the page-table
planner and encoder, the reference walker, PE checks, ESP assembly, the QEMU runner) and
runs and is tested without SCons; ``site_scons/site_tools`` only wires it into builds.
"""

from highboot.errors import HighbootError

__all__ = ["HighbootError"]
__version__ = "0.1.0"
