"""Running a build: what each SCons step does (steps), the build directory's records, lock and
never-stale rules (records), and the Rust toolchain (toolchain)."""
