"""Reading what the user brings: one check for every path (paths), the kernel ELF (kernel) and its
dynamic relocations (relocations), layouts, modules, and the fs-verity digests the loader checks."""
