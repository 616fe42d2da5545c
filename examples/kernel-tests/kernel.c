/* A kernel that tests itself: what `scons test` runs on every machine of this project's [test]
 * table (highboot.toml). It checks what it was handed against what the machine should give it
 * (its command line says what to expect), releases every other CPU and waits for each to check
 * in, then reports: "ALL TESTS PASSED" and the isa-debug-exit code 0x10 (QEMU exits 33), or a
 * "FAILED: ..." line and 0x11 (QEMU exits 35). Built as a position-independent kernel, so the
 * same ELF boots in any layout and with KASLR. */

#include <stddef.h>
#include <stdint.h>

#include "highboot.h"

static inline void outb(uint16_t port, uint8_t value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) {
    uint8_t value;
    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

static void put(const char *s) {
    for (; *s; s++) {
        while (!(inb(0x3f8 + 5) & 0x20)) {
        }
        outb(0x3f8, (uint8_t)*s);
    }
}

static void put_dec(uint64_t v) {
    char buf[21];
    int i = 20;
    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(&buf[i]);
}

static __attribute__((noreturn)) void finish(uint32_t code) {
    __asm__ volatile("outl %0, %1" : : "a"(code), "Nd"((uint16_t)0xf4));
    for (;;) {
        __asm__ volatile("cli; hlt");
    }
}

static int failures;

static void check(int ok, const char *what) {
    put(ok ? "ok      " : "FAILED: ");
    put(what);
    put("\n");
    failures += !ok;
}

/* The value of "key=N" on the command line (fallback if absent). */
static uint64_t option(const char *cmdline, const char *key, uint64_t fallback) {
    for (const char *p = cmdline; *p; p++) {
        if (p != cmdline && p[-1] != ' ') {
            continue;
        }
        const char *k = key, *q = p;
        while (*k && *q == *k) {
            k++, q++;
        }
        if (*k || *q != '=') {
            continue;
        }
        uint64_t v = 0;
        for (q++; *q >= '0' && *q <= '9'; q++) {
            v = v * 10 + (uint64_t)(*q - '0');
        }
        return v;
    }
    return fallback;
}

static volatile uint64_t checked_in;

/* Where each released CPU goes: RDI is its record, RSP its own stack. */
static __attribute__((noreturn)) void ap_main(struct highboot_cpu *self) {
    if (self->extra_argument == 0x5eed) { /* its own record, as the kernel filled it in */
        __atomic_fetch_add(&checked_in, 1, __ATOMIC_SEQ_CST);
    }
    for (;;) {
        __asm__ volatile("cli; hlt");
    }
}

void _start(const struct highboot_boot_info *info) {
    put("kernel-tests: running\n");
    check(info->magic == HIGHBOOT_MAGIC && info->version == HIGHBOOT_VERSION, "boot info magic and version");
    const char *cmdline = (const char *)info->cmdline;

    const struct highboot_memory_region *map = (const void *)info->memory_map;
    uint64_t usable = 0;
    int sorted = 1;
    for (uint64_t i = 0; i < info->memory_map_count; i++) {
        if (map[i].type == HIGHBOOT_MEM_USABLE) {
            usable += map[i].length;
        }
        if (i && map[i].base < map[i - 1].base + map[i - 1].length) {
            sorted = 0;
        }
    }
    check(sorted, "memory map sorted, no overlaps");
    uint64_t want_mib = option(cmdline, "expect_memory_mib", 256);
    put("usable memory: ");
    put_dec(usable >> 20);
    put(" MiB\n");
    check(usable >= (want_mib >> 1) << 20 && usable <= want_mib << 20, "usable memory fits the machine");

    uint64_t want_cpus = option(cmdline, "expect_cpus", 1);
    check(info->cpu_count == want_cpus, "every CPU handed over");
    struct highboot_cpu *cpus = (struct highboot_cpu *)info->cpus;
    for (uint64_t i = 1; i < info->cpu_count; i++) {
        cpus[i].extra_argument = 0x5eed;
        __atomic_store_n(&cpus[i].goto_address, (uint64_t)(uintptr_t)ap_main, __ATOMIC_SEQ_CST);
    }
    for (uint64_t spins = 0; checked_in < info->cpu_count - 1 && spins < 2000000000ull; spins++) {
        __asm__ volatile("pause");
    }
    check(checked_in == info->cpu_count - 1, "every released CPU checked in");

    if (option(cmdline, "expect_la57", 0)) {
        uint64_t cr4;
        __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
        check(cr4 & (1ull << 12), "5-level paging (CR4.LA57)");
    }
    if (option(cmdline, "expect_kaslr", 0)) {
        check(info->flags & HIGHBOOT_FLAG_KASLR, "placed at random (KASLR)");
    }

    if (failures) {
        put("FAILED: ");
        put_dec((uint64_t)failures);
        put(" checks\n");
        finish(0x11);
    }
    put("ALL TESTS PASSED\n");
    finish(0x10);
}
