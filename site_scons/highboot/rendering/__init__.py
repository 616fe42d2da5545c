"""Turning plans into sources: the one Jinja environment and its template references (templates), and
the loader's own binary contracts between Rust and assembly (loader_abi), and the CPU's control bits
both of them name (cpu_bits)."""
