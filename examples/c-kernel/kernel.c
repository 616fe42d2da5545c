/* A C kernel for highboot: the same checks as the Rust sample kernel, through highboot.h.
 * highboot.h is the boot protocol, all a kernel of your own needs; highboot_report.h is the serial
 * report highboot's tests read (HIGHBOOT_REPORT_*, HIGHBOOT_INFO_*, HIGHBOOT_EXIT_*), which this
 * kernel prints because the test suite boots it. It checks the boot info, the memory map and the CPU state, walks its own page tables from CR3
 * and prints them (the tests compare them with the plan), calls EFI GetTime through the virtual
 * runtime services, and exits QEMU through isa-debug-exit (HIGHBOOT_EXIT_PASS or _FAIL).
 * Build: gcc -ffreestanding -nostdlib -static -mcmodel=kernel -mno-red-zone -mgeneral-regs-only
 *        -fno-pic -no-pie -I<build>/include -Wl,-T,<build>/gen/link-fixed.ld kernel.c
 * or, as the toolchain lays it out (ET_DYN at 0, relocated by the loader):
 *        gcc ... -static-pie -fPIE -fasynchronous-unwind-tables -Wl,--eh-frame-hdr kernel.c
 * When the ELF headers are loaded (__ehdr_start), it also checks the boot info and the live
 * mappings against its own program headers. */
#include <stdint.h>
#include <stddef.h>

#include "highboot.h"
#include "highboot_report.h" /* the tests' report, not the protocol */

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
    __asm__ volatile("outl %0, %1" : : "a"(code), "Nd"((uint16_t)HIGHBOOT_EXIT_PORT));
    for (;;) __asm__ volatile("cli; hlt");
}

/* The report's words (highboot.h renders them from site_scons/testkit/report.py). */
static const char *const access_text[] = HIGHBOOT_REPORT_ACCESS; /* [writable | executable << 1] */
static const char *const cache_text[] = HIGHBOOT_REPORT_CACHE;   /* [uncached] */
#define SP " "
#define HEX SP HIGHBOOT_REPORT_HEX

/* --- the page-table walk: coalesced ranges "MAP va pa size access" --- */
struct range { uint64_t va, pa, size; int w, x, live; };
static struct range cur;
static uint64_t dmap;
static unsigned levels, wx, nx_ranges;
static int cpu_nx; /* the CPU has NX (cpu_features): pages can be kept from execution */

static void flush(void) {
    if (!cur.live) return;
    puts_serial(HIGHBOOT_REPORT_MAP HEX); puthex(cur.va, 16); puts_serial(HEX); puthex(cur.pa, 16);
    puts_serial(HEX); puthex(cur.size, 1); puts_serial(SP); puts_serial(access_text[cur.w | cur.x << 1]);
    puts_serial("\n");
    if (cur.w && cur.x) wx++;
    if (!cur.x) nx_ranges++;
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
        if (!(e & HIGHBOOT_PTE_PRESENT)) continue;
        uint64_t va = base | (i << shift);
        if (va & (1ULL << (bits - 1))) va |= ~((1ULL << bits) - 1);
        int ew = w && (e & HIGHBOOT_PTE_WRITABLE), ex = x && !(e & HIGHBOOT_PTE_NO_EXECUTE);
        if (depth == levels - 1 || ((e & HIGHBOOT_PTE_HUGE_PAGE) && shift <= 30)) {
            uint64_t size = 1ULL << shift;
            emit(va, e & HIGHBOOT_PTE_ADDR_MASK & ~(size - 1), size, ew, ex);
        } else {
            visit(e & HIGHBOOT_PTE_ADDR_MASK, depth + 1, va & ((1ULL << bits) - 1), ew, ex);
        }
    }
}

/* One address through the live tables: present, and the rights the CPU applies (W and X
 * accumulate over the levels, as in visit); nx: not executable, or the CPU has no NX to say so. */
struct translation { int present, w, x, nx; uint64_t pa; };
static struct translation translate(uint64_t root, uint64_t va) {
    uint64_t table = root;
    int w = 1, x = 1;
    for (unsigned depth = 0; depth < levels; depth++) {
        unsigned shift = 12 + 9 * (levels - 1 - depth);
        uint64_t e = *(volatile uint64_t *)(dmap + table + ((va >> shift) & 511) * 8);
        if (!(e & HIGHBOOT_PTE_PRESENT)) break;
        w = w && (e & HIGHBOOT_PTE_WRITABLE);
        x = x && !(e & HIGHBOOT_PTE_NO_EXECUTE);
        if (depth == levels - 1 || ((e & HIGHBOOT_PTE_HUGE_PAGE) && shift <= 30))
            return (struct translation){1, w, x, !x || !cpu_nx,
                                        (e & HIGHBOOT_PTE_ADDR_MASK & ~((1ULL << shift) - 1)) | (va & ((1ULL << shift) - 1))};
        table = e & HIGHBOOT_PTE_ADDR_MASK;
    }
    return (struct translation){0, 0, 0, 0, 0};
}

/* --- absolute pointers: built as PIE, each is a dynamic relocation the loader must apply --- */
/* Read through a volatile lvalue: the object keeps its section (a volatile object would move
 * from .data.rel.ro to .data) and the compiler cannot fold the load into a RIP-relative lea. */
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
static uint64_t relocated_object = 0x4f424a454354ULL;
/* Constant but relocated: .data.rel.ro, which the loader maps read-only after relocating. */
static const struct relro_table {
    void (*put)(const char *);
    const uint64_t *object;
} relro_table = {puts_serial, &relocated_object};
/* Writable: .data. */
static uint64_t *data_pointer = &relocated_object;

/* Initialized TLS, never accessed (FS is not set up): it only gives the image a PT_TLS, whose
 * template the loader reports; the value is looked for in that template. */
#define TLS_MARKER 0x4b4e52454b534c54ULL
__thread uint64_t tls_marker __attribute__((used)) = TLS_MARKER;

static void check_relocations(void) {
    check(READ_ONCE(relro_table.put) == puts_serial, ".data.rel.ro function pointer is not relocated");
    check(READ_ONCE(relro_table.object) == &relocated_object, ".data.rel.ro object pointer is not relocated");
    check(READ_ONCE(data_pointer) == &relocated_object, ".data object pointer is not relocated");
    check(*READ_ONCE(data_pointer) == 0x4f424a454354ULL, ".data object pointer does not reach its object");
}

/* --- the kernel's own ELF headers, when the image loads them (weak: 0 when a linker script
 *     leaves them out, as highboot's does) --- */
extern const char __ehdr_start[] __attribute__((weak));

struct elf_header {
    uint8_t ident[16];
    uint16_t type, machine;
    uint32_t version;
    uint64_t entry, phoff, shoff;
    uint32_t flags;
    uint16_t ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};
struct elf_phdr { uint32_t type, flags; uint64_t offset, vaddr, paddr, filesz, memsz, align; };
enum { ET_DYN = 3, PT_LOAD = 1, PT_TLS = 7, PT_GNU_EH_FRAME = 0x6474e550, PT_GNU_RELRO = 0x6474e552 };

static const struct elf_phdr *find_phdr(const struct elf_phdr *ph, unsigned n, uint32_t type) {
    for (unsigned i = 0; i < n; i++)
        if (ph[i].type == type && (type != PT_LOAD || ph[i].offset == 0)) return &ph[i];
    return NULL;
}

void kmain(const struct highboot_boot_info *info, uint64_t entry_rsp);

static void check_self_view(const struct highboot_boot_info *info, uint64_t root) {
    /* Whatever the shape: code is RX, data RW+NX where the CPU looks. */
    struct translation t = translate(root, (uint64_t)(uintptr_t)&kmain);
    check(t.present && !t.w && t.x, "kmain's page is not present, read-only and executable");
    t = translate(root, (uint64_t)(uintptr_t)&data_pointer);
    check(t.present && t.w && t.nx, ".data page is not present, writable and NX");

    /* Loaded headers lie inside the image. Otherwise the weak reference is 0, or, with lld (which
     * defines __ehdr_start even when no PT_LOAD holds the headers and relaxes its GOT load into a
     * RIP-relative lea), 0 plus the kernel's slide: an unmapped lower-half address either way. */
    uint64_t ehdr = (uint64_t)(uintptr_t)__ehdr_start;
    if (ehdr < info->kernel_virt_base || ehdr - info->kernel_virt_base >= info->kernel_image_size) {
        puts_serial(HIGHBOOT_REPORT_INFO SP HIGHBOOT_INFO_SHAPE "script\n");
        return;
    }
    const struct elf_header *eh = (const void *)__ehdr_start;
    if (eh->ident[0] != 0x7f || eh->ident[1] != 'E' || eh->ident[2] != 'L' || eh->ident[3] != 'F' ||
        eh->phentsize != sizeof(struct elf_phdr)) {
        check(0, "__ehdr_start is not an ELF64 header");
        return;
    }
    /* The program headers follow the ELF header in the first PT_LOAD (file offset 0). */
    const struct elf_phdr *ph = (const void *)(__ehdr_start + eh->phoff);
    const struct elf_phdr *first = find_phdr(ph, eh->phnum, PT_LOAD);
    if (!first) {
        check(0, "no PT_LOAD at file offset 0 though the headers are loaded");
        return;
    }
    uint64_t bias = (uint64_t)(uintptr_t)__ehdr_start - first->vaddr;
    check(info->kernel_load_bias == bias, "kernel_load_bias is not __ehdr_start - the first PT_LOAD's p_vaddr");

    const struct elf_phdr *eh_frame = find_phdr(ph, eh->phnum, PT_GNU_EH_FRAME);
    if (eh_frame) {
        check(info->eh_frame_hdr == eh_frame->vaddr + bias && info->eh_frame_hdr_size == eh_frame->memsz,
              "eh_frame_hdr is not PT_GNU_EH_FRAME");
        check(info->flags & HIGHBOOT_FLAG_EH_FRAME_HDR, "PT_GNU_EH_FRAME but HIGHBOOT_FLAG_EH_FRAME_HDR clear");
        check(*(const volatile uint8_t *)(uintptr_t)(eh_frame->vaddr + bias) == 1, ".eh_frame_hdr version is not 1");
    } else {
        check(!info->eh_frame_hdr && !info->eh_frame_hdr_size && !(info->flags & HIGHBOOT_FLAG_EH_FRAME_HDR),
              "eh_frame_hdr reported without PT_GNU_EH_FRAME");
    }

    const struct elf_phdr *tls = find_phdr(ph, eh->phnum, PT_TLS);
    if (tls) {
        check(info->tls_template == tls->vaddr + bias && info->tls_file_size == tls->filesz &&
              info->tls_mem_size == tls->memsz && info->tls_align == tls->align, "tls_* is not PT_TLS");
        check(info->flags & HIGHBOOT_FLAG_TLS, "PT_TLS but HIGHBOOT_FLAG_TLS clear");
        int found = 0;
        for (uint64_t off = 0; off + 8 <= tls->filesz; off += 8)
            found |= *(const volatile uint64_t *)(uintptr_t)(tls->vaddr + bias + off) == TLS_MARKER;
        check(found, "the TLS template does not hold tls_marker's initial value");
    } else {
        check(!info->tls_template && !info->tls_file_size && !info->tls_mem_size && info->tls_align == 1 &&
              !(info->flags & HIGHBOOT_FLAG_TLS), "tls_* reported without PT_TLS");
    }

    /* Read-only once relocated, by ld.so's rule: from the page RELRO starts in to the page its end
     * rounds down to (linkers start RELRO a segment, so its first page holds no other data). */
    const struct elf_phdr *relro = find_phdr(ph, eh->phnum, PT_GNU_RELRO);
    uint64_t relro_pages = 0;
    if (relro) {
        uint64_t start = relro->vaddr + bias, end = start + relro->memsz;
        uint64_t table = (uint64_t)(uintptr_t)&relro_table;
        check(start <= table && table + sizeof relro_table <= end, ".data.rel.ro is outside PT_GNU_RELRO");
        for (uint64_t va = start & ~0xfffULL; va + 0x1000 <= end; va += 0x1000, relro_pages++) {
            t = translate(root, va);
            check(t.present && !t.w && t.nx, "a PT_GNU_RELRO page is not mapped read-only and NX");
        }
    }

    /* The same keys as the Rust sample kernel's line (the tests read them). */
    puts_serial(HIGHBOOT_REPORT_INFO SP HIGHBOOT_INFO_SHAPE); puts_serial(eh->type == ET_DYN ? "toolchain" : "exec");
    puts_serial(SP HIGHBOOT_INFO_KERNEL_LOAD_BIAS); puthex(bias, 1);
    puts_serial(SP HIGHBOOT_INFO_RELRO_PAGES); putdec(relro_pages);
    puts_serial(SP HIGHBOOT_INFO_EH_FRAME_HDR); puthex(info->eh_frame_hdr, 1);
    puts_serial(SP HIGHBOOT_INFO_EH_FRAME_HDR_SIZE); puthex(info->eh_frame_hdr_size, 1);
    puts_serial(SP HIGHBOOT_INFO_TLS_TEMPLATE); puthex(info->tls_template, 1);
    puts_serial(SP HIGHBOOT_INFO_TLS_MEM_SIZE); puthex(info->tls_mem_size, 1);
    puts_serial("\n");
}

/* --- what is handed over besides the image: modules and the kernel file (the same checks as
 *     kernel/src/handed.rs, reported in the same MODULE lines) --- */
struct owned { uint64_t base, end; };

static uint64_t page_end(uint64_t end) { return (end + 0xfff) & ~0xfffULL; }

static void puthex_bytes(const uint8_t *p, uint64_t n) {
    if (!n) { putc_serial('-'); return; }
    for (uint64_t i = 0; i < n; i++) puthex(p[i], 2);
}
static uint64_t c_strlen(const char *s) { uint64_t n = 0; while (s[n]) n++; return n; }

static int disjoint(struct owned a, struct owned b) { return a.end <= b.base || b.end <= a.base || b.end == b.base; }

/* In one KERNEL entry of the memory map, page aligned, the tail of its last page zero. */
static void check_owned(const struct highboot_boot_info *info, struct owned r, uint64_t size, const char *what) {
    const struct highboot_memory_region *map = (const void *)info->memory_map;
    int in_kernel = 0;
    for (uint64_t i = 0; i < info->memory_map_count; i++)
        if (map[i].type == HIGHBOOT_MEM_KERNEL && map[i].base <= r.base && r.end <= map[i].base + map[i].length)
            in_kernel = 1;
    check(r.base && !(r.base & 0xfff), what);
    check(in_kernel, what);
    const volatile uint8_t *tail = (const void *)(uintptr_t)(info->direct_map_base + r.base + size);
    int zero = 1;
    for (uint64_t i = 0; i < r.end - r.base - size; i++) zero &= tail[i] == 0;
    check(zero, what);
}

/* The pattern seed of a module whose command line has a "pattern=N" word, or -1. */
static int64_t pattern_seed(const char *cmdline) {
    for (const char *p = cmdline; *p; p++) {
        if ((p == cmdline || p[-1] == ' ') && p[0] == 'p' && p[1] == 'a' && p[2] == 't' && p[3] == 't' &&
            p[4] == 'e' && p[5] == 'r' && p[6] == 'n' && p[7] == '=') {
            int64_t v = 0;
            for (p += 8; *p >= '0' && *p <= '9'; p++) v = v * 10 + (*p - '0');
            return v;
        }
    }
    return -1;
}

static void check_handed(const struct highboot_boot_info *info) {
    const struct highboot_module *mods = (const void *)info->modules;
    struct owned block = {info->kernel_phys_base, info->kernel_phys_base + info->kernel_phys_size};
    struct owned fb = {info->framebuffer_phys, info->framebuffer_phys + info->framebuffer_size};
    struct owned file = {info->kernel_file_phys, page_end(info->kernel_file_phys + info->kernel_file_size)};
    static const char *const pattern_text[] = HIGHBOOT_REPORT_PATTERN; /* [none, ok, bad] */
    puts_serial(HIGHBOOT_REPORT_INFO SP HIGHBOOT_INFO_MODULES); putdec(info->module_count); puts_serial("\n");
    for (uint64_t n = 0; n < info->module_count; n++) {
        const struct highboot_module *m = &mods[n];
        const uint8_t *data = (const void *)(uintptr_t)m->virt;
        uint64_t fnv = 0xcbf29ce484222325ULL;
        for (uint64_t i = 0; i < m->size; i++) fnv = (fnv ^ data[i]) * 0x100000001b3ULL;
        const char *name = (const char *)(uintptr_t)m->name, *cmdline = (const char *)(uintptr_t)m->cmdline;
        int64_t seed = pattern_seed(cmdline);
        int pattern = 0; /* none */
        if (seed >= 0) {
            int ok = 1;
            for (uint64_t i = 0; i < m->size && ok; i++)
                ok = data[i] == (uint8_t)((((uint64_t)seed << 40) + i / 8) >> (8 * (i % 8)));
            check(ok, "a module differs from its test pattern");
            pattern = ok ? 1 : 2;
        }
        puts_serial(HIGHBOOT_REPORT_MODULE SP); putdec(n); puts_serial(HEX); puthex(m->phys, 1);
        puts_serial(HEX); puthex(m->virt, 1); puts_serial(HEX); puthex(m->size, 1); puts_serial(HEX); puthex(fnv, 1);
        puts_serial(SP); puthex_bytes((const uint8_t *)name, c_strlen(name));
        puts_serial(SP); puthex_bytes((const uint8_t *)cmdline, c_strlen(cmdline));
        puts_serial(SP); puthex_bytes(m->digest, sizeof m->digest);
        puts_serial(SP); puts_serial(pattern_text[pattern]); puts_serial("\n");
        if (!m->size) {
            check(!m->phys && !m->virt, "an empty module has an address");
            continue;
        }
        check(m->virt == info->direct_map_base + m->phys, "a module's virt is not direct_map_base + phys");
        struct owned r = {m->phys, page_end(m->phys + m->size)};
        check_owned(info, r, m->size, "a module is not page-aligned KERNEL memory with a zeroed tail");
        check(disjoint(r, block) && disjoint(r, fb) && (!info->kernel_file_size || disjoint(r, file)),
              "a module overlaps the block, the framebuffer or the kernel file");
        for (uint64_t k = 0; k < n; k++)
            if (mods[k].size)
                check(disjoint(r, (struct owned){mods[k].phys, page_end(mods[k].phys + mods[k].size)}),
                      "two modules overlap");
    }
    puts_serial(HIGHBOOT_REPORT_INFO SP HIGHBOOT_INFO_KERNEL_FILE_PHYS); puthex(info->kernel_file_phys, 1);
    puts_serial(SP HIGHBOOT_INFO_KERNEL_FILE_SIZE); puthex(info->kernel_file_size, 1); puts_serial("\n");
    if (!info->kernel_file_size) {
        check(!info->kernel_file_phys && !info->kernel_file_virt, "kernel file fields are set only in part");
        return;
    }
    check(info->kernel_file_virt == info->direct_map_base + info->kernel_file_phys,
          "kernel_file_virt is not direct_map_base + kernel_file_phys");
    check_owned(info, file, info->kernel_file_size, "the kernel file is not page-aligned KERNEL memory with a zeroed tail");
    check(disjoint(file, block) && disjoint(file, fb), "the kernel file overlaps the block or the framebuffer");
    /* The file is the running kernel: its entry, placed, is where we were entered, and its read-only
     * PT_LOAD segments are byte for byte what runs. */
    const uint8_t *f = (const void *)(uintptr_t)info->kernel_file_virt;
    const struct elf_header *eh = (const void *)f;
    int elf = info->kernel_file_size >= sizeof *eh && f[0] == 0x7f && f[1] == 'E' && f[2] == 'L' && f[3] == 'F' &&
              eh->machine == 62 && eh->phentsize == sizeof(struct elf_phdr);
    check(elf, "the kernel file is not an x86-64 ELF64 file");
    if (!elf) return;
    check(eh->entry + info->kernel_load_bias == info->kernel_entry, "the kernel file's entry (placed) is not kernel_entry");
    const struct elf_phdr *ph = (const void *)(f + eh->phoff);
    unsigned compared = 0;
    for (unsigned k = 0; k < eh->phnum; k++) {
        if (ph[k].type != PT_LOAD || (ph[k].flags & 2) || !ph[k].filesz) continue;
        const volatile uint8_t *run = (const void *)(uintptr_t)(ph[k].vaddr + info->kernel_load_bias);
        int same = ph[k].offset + ph[k].filesz <= info->kernel_file_size;
        for (uint64_t i = 0; same && i < ph[k].filesz; i++) same = run[i] == f[ph[k].offset + i];
        check(same, "a read-only segment of the kernel file differs from the running kernel");
        compared++;
    }
    check(compared > 0, "the kernel file has no read-only segment to compare");
    puts_serial(HIGHBOOT_REPORT_INFO SP HIGHBOOT_INFO_KERNEL_FILE_SEGMENTS_COMPARED); putdec(compared);
    puts_serial("\n");
}

/* --- the application processors the loader parked (the same checks as kernel/src/smp.rs, in
 *     the same CPU lines): release each, let it check on itself what the entry ABI promises an
 *     AP, collect the verdicts (APs never print: COM1 is the BSP's) --- */
#define AP_TAG (0x48494748ULL << 32) /* extra_argument as the BSP sets it, | the record's index */
#define AP_DONE (0x444f4e45ULL << 32) /* ... and as the AP answers, | its failure bits */
static const char *const ap_failures[] = {
    "its APIC ID (CPUID) is not its record's", "CR3 is not page_table_root", "RSP at entry is not stack_top - 8",
    "the return address at entry is not 0", "extra_argument is not the one the kernel set", "interrupts are enabled",
    "CR0.WP is clear", "EFER.NXE is clear on a CPU with NX", "CR4.LA57 differs from the BSP's",
    "its stack does not keep what it is given",
};
static const struct highboot_boot_info *volatile ap_info;
static volatile uint64_t bsp_cr4_la57;

static inline uint64_t rdtsc(void) { uint32_t lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return (uint64_t)hi << 32 | lo; }
static inline uint64_t rdmsr(uint32_t msr) { uint32_t lo, hi; __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr)); return (uint64_t)hi << 32 | lo; }
static inline void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
/* This CPU's APIC ID: the x2APIC one where CPUID has leaf 0xb. */
static uint32_t apic_id(void) {
    uint32_t r[4];
    cpuid(0, 0, r);
    if (r[0] >= 0xb) {
        cpuid(0xb, 0, r);
        if (r[1]) return r[3];
    }
    cpuid(1, 0, r);
    return r[1] >> 24;
}
static uint64_t read_cr(int n) {
    uint64_t v;
    if (n == 0) __asm__ volatile("mov %%cr0, %0" : "=r"(v));
    else if (n == 3) __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    else __asm__ volatile("mov %%cr4, %0" : "=r"(v));
    return v;
}
/* Spin until *word's high half is `high` or about `seconds` at a (generous) 10 GHz TSC. */
static int wait_high(const uint64_t *word, uint64_t high, uint64_t seconds) {
    uint64_t end = rdtsc() + seconds * 10000000000ULL;
    while ((__atomic_load_n(word, __ATOMIC_ACQUIRE) >> 32) != high)
        if (rdtsc() > end) return 0; else __asm__ volatile("pause");
    return 1;
}

void c_ap_main(struct highboot_cpu *record, uint64_t entry_rsp);
/* Entered as if called (RSP = stack_top - 8): realign for the call. */
__asm__(".pushsection .text\n"
        "c_ap_entry:\n"
        "    mov %rsp, %rsi\n"
        "    sub $8, %rsp\n"
        "    call c_ap_main\n"
        "1:  cli\n"
        "    hlt\n"
        "    jmp 1b\n"
        ".popsection\n");
void c_ap_entry(void);

void c_ap_main(struct highboot_cpu *record, uint64_t entry_rsp) {
    const struct highboot_boot_info *info = ap_info;
    uint64_t rflags;
    __asm__ volatile("pushfq; pop %0" : "=r"(rflags));
    uint64_t index = (uint64_t)(uintptr_t)(record - (struct highboot_cpu *)(uintptr_t)info->cpus);
    uint64_t ret = *(volatile uint64_t *)(uintptr_t)entry_rsp;
    volatile uint8_t buffer[512];
    for (unsigned i = 0; i < sizeof buffer; i++) buffer[i] = (uint8_t)(i ^ index);
    int kept = 1;
    for (unsigned i = 0; i < sizeof buffer; i++) kept &= buffer[i] == (uint8_t)(i ^ index);
    int failed_at[] = {
        apic_id() != record->apic_id,
        (read_cr(3) & HIGHBOOT_PTE_ADDR_MASK) != info->page_table_root,
        entry_rsp != record->stack_top - 8,
        ret != 0,
        __atomic_load_n(&record->extra_argument, __ATOMIC_ACQUIRE) != (AP_TAG | index),
        (rflags & (1 << 9)) != 0,
        !(read_cr(0) & (1 << 16)),
        (info->cpu_features & HIGHBOOT_CPU_NX) && !(rdmsr(0xc0000080) & (1 << 11)),
        (read_cr(4) & (1 << 12)) != bsp_cr4_la57,
        !kept,
    };
    uint64_t bits = 0;
    for (unsigned i = 0; i < sizeof failed_at / sizeof failed_at[0]; i++) bits |= (uint64_t)failed_at[i] << i;
    __atomic_store_n(&record->extra_argument, AP_DONE | bits, __ATOMIC_RELEASE);
}

static void put_cpu(uint64_t index, const struct highboot_cpu *c, int state) {
    static const char *const state_text[] = HIGHBOOT_REPORT_CPU_STATE;
    puts_serial(HIGHBOOT_REPORT_CPU SP); putdec(index); puts_serial(SP); putdec(c->processor_id);
    puts_serial(HEX); puthex(c->apic_id, 1); puts_serial(HEX); puthex(c->stack_top, 1);
    puts_serial(SP); puts_serial(state_text[state]); puts_serial("\n");
}

static void self_start(const struct highboot_boot_info *info);

static void check_cpus(const struct highboot_boot_info *info, uint64_t root) {
    puts_serial(HIGHBOOT_REPORT_INFO SP HIGHBOOT_INFO_CPU_COUNT); putdec(info->cpu_count);
    puts_serial(SP HIGHBOOT_INFO_BSP_APIC_ID); puthex(info->bsp_apic_id, 1);
    puts_serial(SP HIGHBOOT_INFO_CPU_FLAGS); puthex(info->cpu_flags, 1);
    puts_serial(SP HIGHBOOT_INFO_CPUS_FAILED); putdec(info->cpus_failed);
    puts_serial(SP HIGHBOOT_INFO_CPUS_NOT_STARTED); putdec(info->cpus_not_started);
    puts_serial(SP HIGHBOOT_INFO_AP_STACK_SIZE); puthex(info->ap_stack_size, 1); puts_serial("\n");
    struct highboot_cpu *cpus = (struct highboot_cpu *)(uintptr_t)info->cpus;
    check(info->cpu_count > 0 && cpus, "the boot info lists no CPU");
    if (!info->cpu_count || !cpus) return;
    check(cpus[0].apic_id == apic_id() && info->bsp_apic_id == apic_id(), "the BSP's APIC ID is not CPUID's");
    check(cpus[0].stack_top == info->stack_top, "the BSP's stack_top is not the boot stack's");
    put_cpu(0, &cpus[0], 0);
    if (!(info->cpu_flags & HIGHBOOT_CPU_SMP)) {
        check(info->cpu_count == 1, "SMP off, yet more than one CPU listed");
        self_start(info);
        return;
    }
    ap_info = info;
    bsp_cr4_la57 = read_cr(4) & (1 << 12);
    for (uint64_t k = 1; k < info->cpu_count; k++) {
        uint64_t top = cpus[k].stack_top, bottom = top - info->ap_stack_size;
        int shared = 0;
        for (uint64_t o = 0; o < k; o++) shared |= cpus[o].stack_top == top;
        check(!(top & 15) && (top >> 63) && !shared, "an AP's stack_top is not 16-byte aligned, in the higher half, its own");
        /* The guard page below the stack is not mapped; the stack is kernel-owned, read-write, NX. */
        check(!translate(root, bottom - 1).present, "no guard page below an AP's stack");
        for (uint64_t va = bottom; va < top; va += 0x1000) {
            struct translation t = translate(root, va);
            int owned = t.pa >= info->kernel_phys_base && t.pa < info->kernel_phys_base + info->kernel_phys_size;
            check(t.present && t.w && t.nx && owned, "an AP's stack is not kernel-owned memory mapped read-write, NX");
        }
        __atomic_store_n(&cpus[k].extra_argument, AP_TAG | k, __ATOMIC_RELAXED);
        __atomic_store_n(&cpus[k].goto_address, (uint64_t)(uintptr_t)c_ap_entry, __ATOMIC_RELEASE);
    }
    uint64_t released = 0;
    for (uint64_t k = 1; k < info->cpu_count; k++) {
        int answered = wait_high(&cpus[k].extra_argument, AP_DONE >> 32, 5);
        uint64_t bits = __atomic_load_n(&cpus[k].extra_argument, __ATOMIC_ACQUIRE) & 0xffffffffULL;
        check(answered, "an AP did not check in after its release");
        for (unsigned i = 0; i < sizeof ap_failures / sizeof ap_failures[0]; i++)
            check(!answered || !(bits & (1ULL << i)), ap_failures[i]);
        int ok = answered && !bits;
        released += ok;
        put_cpu(k, &cpus[k], ok ? 1 : 2);
    }
    puts_serial(HIGHBOOT_REPORT_INFO SP HIGHBOOT_INFO_APS_RELEASED); putdec(released); puts_serial("\n");
}

/* SMP off: the loader left the APs alone. Start them here (INIT, SIPI, SIPI to all but this CPU,
 * through the xAPIC's ICR in the direct map) into a real-mode stub below 1 MiB that counts itself
 * in and halts. */
static void self_start(const struct highboot_boot_info *info) {
    if (!info->cpus_not_started) return;
    const struct highboot_memory_region *map = (const void *)info->memory_map;
    uint64_t page = 0;
    for (uint64_t i = 0; i < info->memory_map_count && !page; i++) {
        uint64_t base = map[i].base < 0x1000 ? 0x1000 : map[i].base, end = map[i].base + map[i].length;
        if (map[i].type == HIGHBOOT_MEM_USABLE && base + 0x1000 <= (end < 0x9f000 ? end : 0x9f000)) page = base;
    }
    check(page != 0, "SMP off: no usable page below 1 MiB to start the APs from");
    if (!page) return;
    /* cli; cld; mov ax, cs; mov ds, ax; lock inc word [0x100]; 1: hlt; jmp 1b */
    static const uint8_t stub[] = {0xfa, 0xfc, 0x8c, 0xc8, 0x8e, 0xd8, 0xf0, 0xff, 0x06, 0x00, 0x01, 0xf4, 0xeb, 0xfd};
    volatile uint8_t *va = (volatile uint8_t *)(uintptr_t)(info->direct_map_base + page);
    for (unsigned i = 0; i < 0x1000; i++) va[i] = i < sizeof stub ? stub[i] : 0;
    uint64_t apic = info->direct_map_base + (rdmsr(0x1b) & 0x000ffffffffff000ULL);
    volatile uint32_t *icr_low = (volatile uint32_t *)(uintptr_t)(apic + 0x300);
    volatile uint32_t *icr_high = (volatile uint32_t *)(uintptr_t)(apic + 0x310);
    uint32_t commands[] = {0x000c4500, 0x000c4600 | (uint32_t)(page >> 12), 0x000c4600 | (uint32_t)(page >> 12)};
    uint64_t delays[] = {10000, 200, 200}; /* microseconds, at a (generous) 3 GHz TSC */
    for (unsigned n = 0; n < 3; n++) {
        *icr_high = 0;
        *icr_low = commands[n]; /* all excluding self (shorthand 11b), level assert */
        for (uint64_t end = rdtsc() + 1000000000ULL; (*icr_low & (1 << 12)) && rdtsc() < end;) __asm__ volatile("pause");
        for (uint64_t end = rdtsc() + delays[n] * 3000; rdtsc() < end;) __asm__ volatile("pause");
    }
    volatile uint16_t *counter = (volatile uint16_t *)(va + 0x100);
    for (uint64_t end = rdtsc() + 50000000000ULL; *counter < info->cpus_not_started && rdtsc() < end;)
        __asm__ volatile("pause");
    puts_serial(HIGHBOOT_REPORT_INFO SP HIGHBOOT_INFO_APS_SELF_STARTED); putdec(*counter); puts_serial("\n");
    check(*counter == info->cpus_not_started, "SMP off: not every AP the kernel started reported in");
}

struct efi_time { uint16_t year; uint8_t month, day, hour, minute, second, pad1; uint32_t ns; int16_t tz; uint8_t dl, pad2; };
typedef uint64_t (__attribute__((ms_abi)) *efi_get_time)(struct efi_time *, void *);

void kmain(const struct highboot_boot_info *info, uint64_t entry_rsp) {
    puts_serial("highboot C kernel: hello\n");
    if (info->magic != HIGHBOOT_MAGIC || info->version != HIGHBOOT_VERSION || info->size < sizeof *info) {
        puts_serial("HIGHBOOT-KERNEL: FAIL (bad boot info header)\n");
        debug_exit(HIGHBOOT_EXIT_FAIL);
    }
    cpu_nx = (info->cpu_features & HIGHBOOT_CPU_NX) != 0;
    { /* the CPU's own word (CPUID 80000001h:EDX[20]): without NX the W^X checks give way */
        uint32_t r[4];
        cpuid(0x80000000u, 0, r);
        int nx = r[0] >= 0x80000001u && (cpuid(0x80000001u, 0, r), (r[3] >> 20) & 1);
        check(nx == cpu_nx, "cpu_features' NX is not CPUID's");
    }
    uint64_t cr0, cr3, cr4;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    __asm__ volatile("mov %%cr3, %0" : "=r"(cr3));
    __asm__ volatile("mov %%cr4, %0" : "=r"(cr4));
    check(entry_rsp == info->stack_top - 8, "RSP at entry is not stack_top - 8");
    check((cr3 & HIGHBOOT_PTE_ADDR_MASK) == info->page_table_root, "CR3 is not page_table_root");
    check(cr0 & (1 << 16), "CR0.WP is clear");
    /* With KASLR the kernel runs slid: wherever it runs, it is inside the image the boot info names. */
    uint64_t here = (uint64_t)(uintptr_t)&kmain;
    check(here >= info->kernel_virt_base && here < info->kernel_virt_base + info->kernel_image_size,
          "kmain is outside kernel_virt_base .. + kernel_image_size");

#define INFO HIGHBOOT_REPORT_INFO SP
    puts_serial(INFO HIGHBOOT_INFO_ENTRY_RSP); puthex(entry_rsp, 1);
    puts_serial("\n" INFO HIGHBOOT_INFO_BLOCK); puthex(info->kernel_phys_base, 1);
    puts_serial(SP HIGHBOOT_INFO_BLOCK_SIZE); puthex(info->kernel_phys_size, 1);
    puts_serial("\n" INFO HIGHBOOT_INFO_DIRECT_MAP_BASE); puthex(info->direct_map_base, 1);
    puts_serial(SP HIGHBOOT_INFO_DIRECT_MAP_SIZE); puthex(info->direct_map_size, 1);
    puts_serial(SP HIGHBOOT_INFO_DIRECT_MAP_PAGE); puthex(info->direct_map_page_size, 1);
    puts_serial("\n" INFO HIGHBOOT_INFO_TRAMPOLINE_PHYS); puthex(info->trampoline_phys, 1);
    puts_serial("\n" INFO HIGHBOOT_INFO_TABLES); putdec(info->page_tables_pages);
    puts_serial(SP HIGHBOOT_INFO_FEATURES); puthex(info->cpu_features, 1);
    puts_serial("\n" INFO HIGHBOOT_INFO_KERNEL_SLIDE); puthex(info->kernel_slide, 1);
    puts_serial("\n" INFO HIGHBOOT_INFO_FRAMEBUFFER); puthex(info->framebuffer_phys, 1);
    puts_serial(SP HIGHBOOT_INFO_FB_SIZE); puthex(info->framebuffer_size, 1);
    /* Quoted text without a quote inside (the build refuses no such command line: say so instead). */
    int quote = 0;
    for (const char *p = (const char *)info->cmdline; *p; p++) quote |= *p == '"';
    puts_serial("\n" INFO HIGHBOOT_INFO_CMDLINE); puts_serial(quote ? "<has a quote>" : (const char *)info->cmdline);
    puts_serial("\"\n");

    const struct highboot_memory_region *map = (const void *)info->memory_map;
    uint64_t usable = 0;
    int kernel_covered = 0;
    check(info->memory_map_count > 0, "empty memory map");
    for (uint64_t i = 0; i < info->memory_map_count; i++) {
        const struct highboot_memory_region *r = &map[i];
        puts_serial(HIGHBOOT_REPORT_MEM HEX); puthex(r->base, 1); puts_serial(HEX); puthex(r->length, 1);
        puts_serial(SP); putdec(r->type); puts_serial("\n");
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
    puts_serial(INFO HIGHBOOT_INFO_LEVELS); putdec(levels); puts_serial("\n");
    uint64_t root = cr3 & HIGHBOOT_PTE_ADDR_MASK;
    check_cpus(info, root); /* the APs run and answer before the walk below */
    for (int i = 0; i < 256; i++) check(!(*(volatile uint64_t *)(dmap + root + i * 8) & HIGHBOOT_PTE_PRESENT), "lower half is mapped");
    visit(root, 0, 0, 1, 1);
    flush();
    if (cpu_nx)
        check(wx == 0, "a writable and executable mapping exists");
    else /* EFER.NXE is clear: bit 63 is reserved, and an access through an entry with it faults */
        check(nx_ranges == 0, "a mapping sets the NX bit on a CPU without NX");
    check_relocations();
    check_self_view(info, root);
    check_handed(info);

    if (!(info->flags & HIGHBOOT_FLAG_NO_EFI_REGION)) {
        const struct highboot_efi_range *er = (const void *)info->efi_runtime_map;
        for (uint64_t i = 0; i < info->efi_runtime_count; i++) {
            int w = !!(er[i].access & HIGHBOOT_ACCESS_WRITE), x = !!(er[i].access & HIGHBOOT_ACCESS_EXECUTE);
            puts_serial(HIGHBOOT_REPORT_EFI HEX); puthex(er[i].phys, 1); puts_serial(HEX); puthex(er[i].virt, 1);
            puts_serial(HEX); puthex(er[i].length, 1); puts_serial(SP); puts_serial(access_text[w | x << 1]);
            puts_serial(SP); puts_serial(cache_text[!!(er[i].access & HIGHBOOT_ACCESS_UNCACHED)]);
            puts_serial("\n");
        }
        check(info->flags & HIGHBOOT_FLAG_EFI_RUNTIME, "runtime services not mapped");
        if (info->flags & HIGHBOOT_FLAG_EFI_RUNTIME) {
            const uint8_t *st = (const void *)info->efi_system_table;
            const uint8_t *rt = *(const uint8_t *const *)(st + 88);
            efi_get_time get_time = *(efi_get_time const *)(rt + 24);
            struct efi_time t = {0};
            check(get_time(&t, NULL) == 0, "GetTime failed");
            puts_serial(INFO HIGHBOOT_INFO_EFI_YEAR); putdec(t.year); puts_serial("\n");
        }
    } else {
        puts_serial(INFO HIGHBOOT_INFO_EFI "none\n");
    }
    puts_serial(failed ? "HIGHBOOT-KERNEL: FAIL\n" : "HIGHBOOT-KERNEL: PASS\n");
    debug_exit(failed ? HIGHBOOT_EXIT_FAIL : HIGHBOOT_EXIT_PASS);
}

__asm__(".section .text.entry,\"ax\",@progbits\n"
        ".globl _start\n"
        "_start:\n"
        "    mov %rsp, %rsi\n"
        "    call kmain\n"
        "1:  hlt\n"
        "    jmp 1b\n"
        ".previous\n");
