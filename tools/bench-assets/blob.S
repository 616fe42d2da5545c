/* The payload that makes tools/bench's kernels as big as its kernel-size section asks: BLOB (a
 * quoted path, given with -D) in read-only data, which both kernels' linker scripts load. */
    .section .rodata.blob, "a"
    .balign 4096
    .incbin BLOB
