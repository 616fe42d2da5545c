/* A kernel for tools/bench's kernel-size section, booted by highboot: its first instruction reads
 * the TSC, which it prints on COM1 with the loader's own entry TSC from the boot info (`INFO
 * tsc_kernel=<n> tsc_loader_entry=<n>`, the sample kernel's keys) before ending QEMU through
 * isa-debug-exit. blob.S makes it as big as the section asks (the multiboot2 kernel GRUB boots
 * carries the same blob). Built with the rendered highboot.h, the tests' highboot_report.h and the
 * linker script. */
#include <stdint.h>

#include "highboot.h"
#include "highboot_report.h"

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc_serial(char c) {
    while (!(inb(0x3fd) & 0x20)) {}
    outb(0x3f8, (uint8_t)c);
}
static void puts_serial(const char *s) { for (; *s; s++) putc_serial(*s); }
static void putdec(uint64_t v) {
    char b[21];
    int n = 0;
    do { b[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n) putc_serial(b[--n]);
}

void kmain(const struct highboot_boot_info *info, uint64_t tsc) {
    puts_serial("\r\n" HIGHBOOT_REPORT_INFO " " HIGHBOOT_INFO_TSC_KERNEL); putdec(tsc);
    puts_serial(" " HIGHBOOT_INFO_TSC_LOADER_ENTRY); putdec(info->tsc_loader_entry);
    puts_serial("\r\n");
    __asm__ volatile("outl %0, %1" : : "a"(0x10u), "Nd"((uint16_t)0xf4));
    for (;;) __asm__ volatile("cli; hlt");
}

__asm__(".section .text.entry,\"ax\",@progbits\n"
        ".globl _start\n"
        "_start:\n"
        "    rdtsc\n" /* the kernel's first instruction */
        "    shl $32, %rdx\n"
        "    or %rdx, %rax\n"
        "    mov %rax, %rsi\n"
        "    call kmain\n"
        ".previous\n");
