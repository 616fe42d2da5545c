/* A C kernel for highboot: the same checks as the Rust sample kernel, through highboot.h.
 * It checks the boot info, the memory map and the CPU state, walks its own page tables from CR3
 * and prints them (the tests compare them with the plan), calls EFI GetTime through the virtual
 * runtime services, and exits QEMU through isa-debug-exit (0x10 pass, 0x11 fail).
 * Build: gcc -ffreestanding -nostdlib -static -mcmodel=kernel -mno-red-zone -mgeneral-regs-only
 *        -fno-pic -no-pie -I<build>/include -Wl,-T,<build>/gen/link.ld kernel.c */
#include <stdint.h>
#include <stddef.h>

#include "highboot.h"

static unsigned failed;

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc_serial(char c) {
    for (int i = 0; i < 100000 && !(inb(0x3fd) & 0x20); i++) {}
    outb(0x3f8, (uint8_t)c);
}
static void puts_serial(const char *s) { for (; *s; s++) { if (*s == '\n') putc_serial('\r'); putc_serial(*s); } }
/* An absolute pointer in data: built as PIE, this is an R_X86_64_RELATIVE the loader must apply. */
static const char *volatile digits = "0123456789abcdef";

static void puthex(uint64_t v, int width) {
    char buf[17];
    int n = 0;
    do { buf[n++] = digits[v & 15]; v >>= 4; } while (v || n < width);
    while (n) putc_serial(buf[--n]);
}
static void putdec(uint64_t v) { char b[21]; int n = 0; do { b[n++] = (char)('0' + v % 10); v /= 10; } while (v); while (n) putc_serial(b[--n]); }

static void check(int ok, const char *what) {
    if (!ok) { failed++; puts_serial("CHECK FAILED: "); puts_serial(what); puts_serial("\n"); }
}

static __attribute__((noreturn)) void debug_exit(uint32_t code) {
    __asm__ volatile("outl %0, %1" : : "a"(code), "Nd"((uint16_t)0xf4));
    for (;;) __asm__ volatile("cli; hlt");
}

/* --- the page-table walk: coalesced ranges "MAP va pa size flags" --- */
struct range { uint64_t va, pa, size; int w, x, live; };
static struct range cur;
static uint64_t dmap;
static unsigned levels, wx;

static void flush(void) {
    if (!cur.live) return;
    puts_serial("MAP "); puthex(cur.va, 16); putc_serial(' '); puthex(cur.pa, 16); putc_serial(' ');
    puthex(cur.size, 1); puts_serial(cur.w ? (cur.x ? " RWX\n" : " RW\n") : (cur.x ? " RX\n" : " R\n"));
    if (cur.w && cur.x) wx++;
    cur.live = 0;
}
static void emit(uint64_t va, uint64_t pa, uint64_t size, int w, int x) {
    if (cur.live && cur.va + cur.size == va && cur.pa + cur.size == pa && cur.w == w && cur.x == x) {
        cur.size += size;
        return;
    }
    flush();
    cur = (struct range){va, pa, size, w, x, 1};
}
static void visit(uint64_t table, unsigned depth, uint64_t base, int w, int x) {
    unsigned shift = 12 + 9 * (levels - 1 - depth), bits = 12 + 9 * levels;
    for (uint64_t i = 0; i < 512; i++) {
        uint64_t e = *(volatile uint64_t *)(dmap + table + i * 8);
        if (!(e & 1)) continue;
        uint64_t va = base | (i << shift);
        if (va & (1ULL << (bits - 1))) va |= ~((1ULL << bits) - 1);
        int ew = w && (e & 2), ex = x && !(e >> 63);
        if (depth == levels - 1 || ((e & 0x80) && shift <= 30)) {
            uint64_t size = 1ULL << shift;
            emit(va, e & 0x000ffffffffff000ULL & ~(size - 1), size, ew, ex);
        } else {
            visit(e & 0x000ffffffffff000ULL, depth + 1, va & ((1ULL << bits) - 1), ew, ex);
        }
    }
}

struct efi_time { uint16_t year; uint8_t month, day, hour, minute, second, pad1; uint32_t ns; int16_t tz; uint8_t dl, pad2; };
typedef uint64_t (__attribute__((ms_abi)) *efi_get_time)(struct efi_time *, void *);

void kmain(const struct highboot_boot_info *info, uint64_t entry_rsp) {
    puts_serial("highboot C kernel: hello\n");
    if (info->magic != HIGHBOOT_MAGIC || info->version != HIGHBOOT_VERSION || info->size < sizeof *info) {
        puts_serial("HIGHBOOT-KERNEL: FAIL (bad boot info header)\n");
        debug_exit(0x11);
    }
    uint64_t cr0, cr3, cr4;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    check(entry_rsp == info->stack_top - 8, "RSP at entry is not stack_top - 8");
    check((cr3 & 0x000ffffffffff000ULL) == info->page_table_root, "CR3 is not page_table_root");
    check(cr0 & (1 << 16), "CR0.WP is clear");
    /* With KASLR the kernel runs slid: wherever it runs, it is inside the image the boot info names. */
    uint64_t here = (uint64_t)(uintptr_t)&kmain;
    check(here >= info->kernel_virt_base && here < info->kernel_virt_base + info->kernel_image_size,
          "kmain is outside kernel_virt_base .. + kernel_image_size");

    puts_serial("INFO entry_rsp=0x"); puthex(entry_rsp, 1);
    puts_serial("\nINFO block=0x"); puthex(info->kernel_phys_base, 1);
    puts_serial(" block_size=0x"); puthex(info->kernel_phys_size, 1);
    puts_serial("\nINFO direct_map_base=0x"); puthex(info->direct_map_base, 1);
    puts_serial(" direct_map_size=0x"); puthex(info->direct_map_size, 1);
    puts_serial(" direct_map_page=0x"); puthex(info->direct_map_page_size, 1);
    puts_serial("\nINFO trampoline_phys=0x"); puthex(info->trampoline_phys, 1);
    puts_serial("\nINFO tables="); putdec(info->page_tables_pages);
    puts_serial("\nINFO kernel_slide=0x"); puthex(info->kernel_slide, 1);
    puts_serial("\nINFO framebuffer=0x"); puthex(info->framebuffer_phys, 1);
    puts_serial(" fb_size=0x"); puthex(info->framebuffer_size, 1);
    puts_serial("\nINFO cmdline=\""); puts_serial((const char *)info->cmdline); puts_serial("\"\n");

    const struct highboot_memory_region *map = (const void *)info->memory_map;
    uint64_t usable = 0;
    int kernel_covered = 0;
    check(info->memory_map_count > 0, "empty memory map");
    for (uint64_t i = 0; i < info->memory_map_count; i++) {
        const struct highboot_memory_region *r = &map[i];
        puts_serial("MEM 0x"); puthex(r->base, 1); puts_serial(" 0x"); puthex(r->length, 1);
        puts_serial(" "); putdec(r->type); puts_serial("\n");
        check(r->length && !(r->base & 0xfff) && !(r->length & 0xfff), "unaligned memory-map entry");
        if (i) check(map[i - 1].base + map[i - 1].length <= r->base, "memory map unsorted or overlapping");
        if (r->type == HIGHBOOT_MEM_USABLE) usable += r->length;
        if (r->type == HIGHBOOT_MEM_KERNEL && r->base <= info->kernel_phys_base &&
            info->kernel_phys_base + info->kernel_phys_size <= r->base + r->length) kernel_covered = 1;
    }
    check(usable >= (16 << 20), "less than 16 MiB usable");
    check(kernel_covered, "kernel block is not a KERNEL entry");

    dmap = info->direct_map_base;
    levels = (cr4 & (1 << 12)) ? 5 : 4;
    uint64_t root = cr3 & 0x000ffffffffff000ULL;
    for (int i = 0; i < 256; i++) check(!(*(volatile uint64_t *)(dmap + root + i * 8) & 1), "lower half is mapped");
    visit(root, 0, 0, 1, 1);
    flush();
    check(wx == 0, "a writable and executable mapping exists");

    if (!(info->flags & HIGHBOOT_FLAG_NO_EFI_REGION)) {
        const struct highboot_efi_range *er = (const void *)info->efi_runtime_map;
        for (uint64_t i = 0; i < info->efi_runtime_count; i++) {
            puts_serial("EFI 0x"); puthex(er[i].phys, 1); puts_serial(" 0x"); puthex(er[i].virt, 1);
            puts_serial(" 0x"); puthex(er[i].length, 1); puts_serial(" R");
            if (er[i].access & HIGHBOOT_ACCESS_WRITE) putc_serial('W');
            if (er[i].access & HIGHBOOT_ACCESS_EXECUTE) putc_serial('X');
            puts_serial("\n");
        }
        check(info->flags & HIGHBOOT_FLAG_EFI_RUNTIME, "runtime services not mapped");
        if (info->flags & HIGHBOOT_FLAG_EFI_RUNTIME) {
            const uint8_t *st = (const void *)info->efi_system_table;
            const uint8_t *rt = *(const uint8_t *const *)(st + 88);
            efi_get_time get_time = *(efi_get_time const *)(rt + 24);
            struct efi_time t = {0};
            check(get_time(&t, NULL) == 0, "GetTime failed");
            puts_serial("INFO efi_year="); putdec(t.year); puts_serial("\n");
        }
    } else {
        puts_serial("INFO efi=none\n");
    }
    puts_serial(failed ? "HIGHBOOT-KERNEL: FAIL\n" : "HIGHBOOT-KERNEL: PASS\n");
    debug_exit(failed ? 0x11 : 0x10);
}

__asm__(".section .text.entry,\"ax\",@progbits\n"
        ".globl _start\n"
        "_start:\n"
        "    mov %rsp, %rsi\n"
        "    call kmain\n"
        "1:  hlt\n"
        "    jmp 1b\n"
        ".previous\n");
