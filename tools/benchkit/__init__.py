"""highboot's benchmarks (tools/bench runs `python -m benchkit` with the project's .venv).

common: paths, the interpreter, running commands   assets: the comparison ESPs (GRUB, floor, fragmenter)
boots: QEMU runs under -icount                     builds: SCons runs (build/esp when missing, timings)
sections: one function per section                 report: tables, targets, bench.json
limine: the limine section's kernel, highboot build and Limine ESP
__main__: options and the table of sections
"""
