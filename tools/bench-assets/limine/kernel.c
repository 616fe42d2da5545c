/* A Limine-protocol kernel for tools/bench's limine section: the same ELF is booted by highboot
 * (PROTOCOL=auto finds the base revision tag) and by Limine itself. Its first instruction reads
 * the TSC, which it prints on COM1 (`INFO tsc_kernel=<n> ...`, bench_serial.h) with the
 * bootloader's name and how many of its requests were answered, then ends QEMU through
 * isa-debug-exit.
 *
 * It asks what nearly every Limine kernel asks (the limine-c-template's framebuffer, and the HHDM
 * and memory map a kernel needs to manage memory), so that both loaders do the work a real kernel
 * makes them do, and reads nothing before its first instruction. Built with highboot-limine.h
 * (rendered into the build's include directory), linked by examples/limine-kernel/link.ld at
 * 0xffffffff80000000 (a fixed kernel: neither loader slides it, so every boot runs the same
 * instructions). */
#include <stddef.h>
#include <stdint.h>

#include "highboot-limine.h"
#include "../bench_serial.h"

#define REQUEST __attribute__((used, section(".limine_requests")))

__attribute__((used, section(".limine_requests_start")))
static volatile uint64_t requests_start[] = LIMINE_REQUESTS_START_MARKER;

REQUEST static volatile uint64_t base_revision[] = LIMINE_BASE_REVISION(2);
REQUEST static volatile struct limine_bootloader_info_request bootloader_info = {
    .id = LIMINE_BOOTLOADER_INFO_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_framebuffer_request framebuffer = {
    .id = LIMINE_FRAMEBUFFER_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_hhdm_request hhdm = {.id = LIMINE_HHDM_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_memmap_request memmap = {.id = LIMINE_MEMMAP_REQUEST_ID, .revision = 0};

__attribute__((used, section(".limine_requests_end")))
static volatile uint64_t requests_end[] = LIMINE_REQUESTS_END_MARKER;

void kmain(uint64_t tsc) {
    bench_report_start(tsc);
    int answered = (bootloader_info.response != NULL) + (framebuffer.response != NULL) + (hhdm.response != NULL)
                   + (memmap.response != NULL);
    bench_puts(" limine_answered=");
    bench_putdec((uint64_t)answered);
    bench_puts(" limine_base_revision_supported=");
    bench_putdec(LIMINE_BASE_REVISION_SUPPORTED(base_revision) ? 1 : 0);
    if (bootloader_info.response != NULL) {
        bench_puts(" limine_bootloader=\"");
        bench_puts((const char *)(uintptr_t)bootloader_info.response->name);
        bench_puts(" ");
        bench_puts((const char *)(uintptr_t)bootloader_info.response->version);
        bench_puts("\"");
    }
    bench_report_end();
}

__asm__(".section .text.entry,\"ax\",@progbits\n"
        ".globl elf_entry\n"
        "elf_entry:\n"
        "    rdtsc\n" /* the kernel's first instruction */
        "    shl $32, %rdx\n"
        "    or %rdx, %rax\n"
        "    mov %rax, %rdi\n"
        "    call kmain\n"
        ".previous\n");
