/* A kernel for tools/bench's kernel-size section, booted by highboot: its first instruction reads
 * the TSC, which it prints on COM1 with the loader's own entry TSC from the boot info (`INFO
 * tsc_kernel=<n> tsc_loader_entry=<n>`, the sample kernel's keys) before ending QEMU through
 * isa-debug-exit (bench_serial.h). blob.S makes it as big as the section asks (the multiboot2
 * kernel GRUB boots carries the same blob). Built with the rendered highboot.h, the tests'
 * highboot_report.h and the linker script. */
#include <stdint.h>

#include "highboot.h"
#include "../bench_serial.h"

void kmain(const struct highboot_boot_info *info, uint64_t tsc) {
    bench_report_start(tsc);
    bench_puts(" " HIGHBOOT_INFO_TSC_LOADER_ENTRY);
    bench_putdec(info->tsc_loader_entry);
    bench_report_end();
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
