/* What tools/bench's C kernels share: COM1 output and the end of a bench boot. Each kernel reads
 * the TSC as its first instruction and hands it here; the line is the tests' report (`INFO
 * tsc_kernel=<n> ...`, keys from highboot_report.h) and QEMU then exits through isa-debug-exit. */
#ifndef BENCH_SERIAL_H
#define BENCH_SERIAL_H

#include <stdint.h>

#include "highboot_report.h"

static inline void bench_outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t bench_inb(uint16_t port) {
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void bench_putc(char c) {
    while (!(bench_inb(0x3fd) & 0x20)) {}
    bench_outb(0x3f8, (uint8_t)c);
}
static inline void bench_puts(const char *s) { for (; *s; s++) bench_putc(*s); }
static inline void bench_putdec(uint64_t v) {
    char b[21];
    int n = 0;
    do { b[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) bench_putc(b[--n]);
}

/* Starts the report line with the kernel's entry TSC; the caller may add ` key=value` fields. */
static inline void bench_report_start(uint64_t tsc_kernel) {
    bench_puts("\r\n" HIGHBOOT_REPORT_INFO " " HIGHBOOT_INFO_TSC_KERNEL);
    bench_putdec(tsc_kernel);
}

/* Ends the line and the boot: PASS on QEMU's isa-debug-exit port. */
static inline __attribute__((noreturn)) void bench_report_end(void) {
    bench_puts("\r\n");
    __asm__ volatile("outl %0, %1" : : "a"((uint32_t)HIGHBOOT_EXIT_PASS), "Nd"((uint16_t)HIGHBOOT_EXIT_PORT));
    for (;;) __asm__ volatile("cli; hlt");
}

#endif
