"""What the kernel is handed at entry and how: highboot's boot info ABI (bootinfo), described once and
rendered to Rust and C."""
