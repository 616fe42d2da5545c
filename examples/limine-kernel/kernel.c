/* highboot's Limine-protocol sample kernel: a freestanding x86-64 kernel that asks for every
 * request of the Limine boot protocol through highboot-limine.h (our own rendering of the
 * protocol, site_scons/highboot/protocols/limine/spec.py) and checks, on itself, what the loader
 * handed over: its entry state, every response, and the page tables it runs on.
 *
 * It reports on COM1 (mirrored to port 0xE9), one line per fact:
 *   INFO ...                                  what the loader said, for the reader
 *   LIMINE <request> <ok|missing|bad> ...     one line per request
 *   STATE <what> <ok|bad> ...                 the machine state at entry
 *   MEMMAP <base> <length> <type>             the memory map response, entry by entry
 *   MAP <va> <pa> <size> <R|RX|RW>            its own image as the page tables map it
 *   HIGHBOOT-LIMINE-KERNEL: PASS | FAIL <first reason>
 * and ends by writing 0x10 (pass) or 0x11 (fail) to QEMU's isa-debug-exit port 0xf4.
 *
 * Build-time knobs (-DNAME=value):
 *   BASE_REVISION     the base revision asked for (default 2)
 *   PAGING_MIN/MAX    the paging mode range (0 = 4-level, 1 = 5-level; default 0..1)
 *   MP_FLAGS          the MP request's flags (default 0; 1 asks for x2APIC)
 *   STACK_SIZE        the stack size asked for (default 128 KiB)
 *   REQUIRED_MODULE   1: also name an internal module the loader must find (required.bin)
 *   EXPECT_CMDLINE    the command line the loader is told to pass (checked when defined)
 *   EXPECT_MODULES    how many modules the loader must hand over (checked when defined)
 *   REQUIRE_NEWER     1: requests newer than Limine 8.x (executable cmdline, bootloader
 *                     performance) must be answered too (default 0: reported, not required)
 *   INTERNAL_MODULES  0: a module response of revision 0 (internal modules not honoured) is
 *                     accepted (default 1: the response must be revision 1 or newer)
 *   EXPECT_UNSUPPORTED 1: BASE_REVISION is newer than the loader keeps: the tag must stay
 *                     unacknowledged and name the revision the loader booted with instead
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "highboot-limine.h"

#pragma GCC visibility push(hidden)

#ifndef BASE_REVISION
#define BASE_REVISION 2
#endif
#ifndef PAGING_MIN
#define PAGING_MIN LIMINE_PAGING_MODE_X86_64_4LVL
#endif
#ifndef PAGING_MAX
#define PAGING_MAX LIMINE_PAGING_MODE_X86_64_5LVL
#endif
#ifndef MP_FLAGS
#define MP_FLAGS 0
#endif
#ifndef STACK_SIZE
#define STACK_SIZE (128 * 1024)
#endif
#ifndef REQUIRED_MODULE
#define REQUIRED_MODULE 0
#endif
#ifndef EXPECT_UNSUPPORTED
#define EXPECT_UNSUPPORTED 0
#endif
#ifndef REQUIRE_NEWER
#define REQUIRE_NEWER 0
#endif
#ifndef INTERNAL_MODULES
#define INTERNAL_MODULES 1
#endif

#define PAGE 4096ULL
#define MAX_CPUS 64
#define EXIT_PASS 0x10
#define EXIT_FAIL 0x11

typedef uint64_t u64;
typedef uint32_t u32;
typedef uint16_t u16;
typedef uint8_t u8;

/* The image's bounds, from link.ld. */
extern char __image_start[], __image_end[], __text_start[], __text_end[], __rodata_start[], __rodata_end[],
    __data_start[], __data_end[];

void kernel_entry(void);
void ap_entry(void);
void elf_entry(void);

/* ---- The requests ------------------------------------------------------------------------ */

#define REQUEST __attribute__((used, aligned(8), section(".limine_requests")))

__attribute__((used, aligned(8), section(".limine_requests_start")))
static volatile u64 requests_start[4] = LIMINE_REQUESTS_START_MARKER;
__attribute__((used, aligned(8), section(".limine_requests_end")))
static volatile u64 requests_end[2] = LIMINE_REQUESTS_END_MARKER;

REQUEST static volatile u64 base_revision[3] = LIMINE_BASE_REVISION(BASE_REVISION);

REQUEST static volatile struct limine_bootloader_info_request bootloader_info_req = {
    .id = LIMINE_BOOTLOADER_INFO_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_executable_cmdline_request executable_cmdline_req = {
    .id = LIMINE_EXECUTABLE_CMDLINE_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_firmware_type_request firmware_type_req = {
    .id = LIMINE_FIRMWARE_TYPE_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_stack_size_request stack_size_req = {
    .id = LIMINE_STACK_SIZE_REQUEST_ID, .revision = 0, .stack_size = STACK_SIZE};
REQUEST static volatile struct limine_hhdm_request hhdm_req = {.id = LIMINE_HHDM_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_framebuffer_request framebuffer_req = {
    .id = LIMINE_FRAMEBUFFER_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_paging_mode_request paging_mode_req = {
    .id = LIMINE_PAGING_MODE_REQUEST_ID, .revision = 1, .mode = PAGING_MAX, .max_mode = PAGING_MAX,
    .min_mode = PAGING_MIN};
REQUEST static volatile struct limine_mp_request mp_req = {
    .id = LIMINE_MP_REQUEST_ID, .revision = 0, .flags = MP_FLAGS};
REQUEST static volatile struct limine_memmap_request memmap_req = {.id = LIMINE_MEMMAP_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_entry_point_request entry_point_req = {
    .id = LIMINE_ENTRY_POINT_REQUEST_ID, .revision = 0, .entry = (u64)(uintptr_t)kernel_entry};
REQUEST static volatile struct limine_executable_file_request executable_file_req = {
    .id = LIMINE_EXECUTABLE_FILE_REQUEST_ID, .revision = 0};

/* Internal modules: one the loader may skip (not on the boot volume), and under REQUIRED_MODULE
 * one it must load. Paths are relative to the kernel's directory. */
static const struct limine_internal_module optional_module = {
    .path = (u64)(uintptr_t)"optional.bin", .string = (u64)(uintptr_t)"optional internal module", .flags = 0};
#if REQUIRED_MODULE
static const struct limine_internal_module required_module = {
    .path = (u64)(uintptr_t)"required.bin", .string = (u64)(uintptr_t)"required internal module",
    .flags = LIMINE_INTERNAL_MODULE_REQUIRED};
#endif
static const u64 internal_modules[] = {
    (u64)(uintptr_t)&optional_module,
#if REQUIRED_MODULE
    (u64)(uintptr_t)&required_module,
#endif
};
REQUEST static volatile struct limine_module_request module_req = {
    .id = LIMINE_MODULE_REQUEST_ID, .revision = 1,
    .internal_module_count = sizeof internal_modules / sizeof internal_modules[0],
    .internal_modules = (u64)(uintptr_t)internal_modules};

REQUEST static volatile struct limine_rsdp_request rsdp_req = {.id = LIMINE_RSDP_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_smbios_request smbios_req = {.id = LIMINE_SMBIOS_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_efi_system_table_request efi_system_table_req = {
    .id = LIMINE_EFI_SYSTEM_TABLE_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_efi_memmap_request efi_memmap_req = {
    .id = LIMINE_EFI_MEMMAP_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_date_at_boot_request date_at_boot_req = {
    .id = LIMINE_DATE_AT_BOOT_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_executable_address_request executable_address_req = {
    .id = LIMINE_EXECUTABLE_ADDRESS_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_bootloader_performance_request bootloader_performance_req = {
    .id = LIMINE_BOOTLOADER_PERFORMANCE_REQUEST_ID, .revision = 0};
REQUEST static volatile struct limine_dtb_request dtb_req = {.id = LIMINE_DTB_REQUEST_ID, .revision = 0};

/* A word of initialised data, to find through the HHDM (executable address check). */
static volatile u64 data_probe = 0x6867696862303074ULL;
static const u64 rodata_probe = 0x726f646174612121ULL;

/* ---- Entry stubs ------------------------------------------------------------------------- */

/* The registers as the loader left them, saved before anything changes them. */
static struct entry_registers {
    u64 rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15, rflags, top_word;
} entry_regs __attribute__((used));

__asm__(
    ".section .text.entry, \"ax\", @progbits\n"
    ".global kernel_entry\n"
    ".type kernel_entry, @function\n"
    "kernel_entry:\n"
    "    mov %rax, entry_regs+0(%rip)\n"
    "    mov %rbx, entry_regs+8(%rip)\n"
    "    mov %rcx, entry_regs+16(%rip)\n"
    "    mov %rdx, entry_regs+24(%rip)\n"
    "    mov %rsi, entry_regs+32(%rip)\n"
    "    mov %rdi, entry_regs+40(%rip)\n"
    "    mov %rbp, entry_regs+48(%rip)\n"
    "    mov %rsp, entry_regs+56(%rip)\n"
    "    mov %r8, entry_regs+64(%rip)\n"
    "    mov %r9, entry_regs+72(%rip)\n"
    "    mov %r10, entry_regs+80(%rip)\n"
    "    mov %r11, entry_regs+88(%rip)\n"
    "    mov %r12, entry_regs+96(%rip)\n"
    "    mov %r13, entry_regs+104(%rip)\n"
    "    mov %r14, entry_regs+112(%rip)\n"
    "    mov %r15, entry_regs+120(%rip)\n"
    "    pushfq\n"
    "    popq entry_regs+128(%rip)\n"
    "    mov (%rsp), %rax\n"
    "    mov %rax, entry_regs+136(%rip)\n"
    "    and $-16, %rsp\n"
    "    call kernel_main\n"
    "1:  cli\n"
    "    hlt\n"
    "    jmp 1b\n"
    ".size kernel_entry, . - kernel_entry\n"
    "\n"
    /* An AP released through goto_address: RDI = its limine_mp_info; every other register but
     * RSP should be 0. ap_main(info, rsp, [rsp], OR of those registers, rflags). */
    ".global ap_entry\n"
    ".type ap_entry, @function\n"
    "ap_entry:\n"
    "    pushfq\n"
    "    or %rbx, %rax\n"
    "    or %rcx, %rax\n"
    "    or %rdx, %rax\n"
    "    or %rsi, %rax\n"
    "    or %rbp, %rax\n"
    "    or %r8, %rax\n"
    "    or %r9, %rax\n"
    "    or %r10, %rax\n"
    "    or %r11, %rax\n"
    "    or %r12, %rax\n"
    "    or %r13, %rax\n"
    "    or %r14, %rax\n"
    "    or %r15, %rax\n"
    "    pop %r8\n"
    "    mov %rax, %rcx\n"
    "    mov %rsp, %rsi\n"
    "    mov (%rsp), %rdx\n"
    "    and $-16, %rsp\n"
    "    call ap_main\n"
    "2:  cli\n"
    "    hlt\n"
    "    jmp 2b\n"
    ".size ap_entry, . - ap_entry\n"
    ".previous\n");

/* ---- Ports and output -------------------------------------------------------------------- */

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) {
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

#define COM1 0x3f8

static void serial_init(void) {
    outb(COM1 + 1, 0x00);  /* no interrupts */
    outb(COM1 + 3, 0x80);  /* DLAB: divisor follows */
    outb(COM1 + 0, 0x01);  /* 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);  /* 8N1 */
    outb(COM1 + 2, 0xc7);  /* FIFOs on, cleared */
    outb(COM1 + 4, 0x03);  /* DTR, RTS */
}

static volatile u32 print_lock;

static void putc_raw(char c) {
    for (int spin = 0; spin < 100000 && !(inb(COM1 + 5) & 0x20); spin++)
        __asm__ volatile("pause");
    outb(COM1, (u8)c);
    outb(0xe9, (u8)c);
}

static void write_str(const char *s) {
    while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
        __asm__ volatile("pause");
    for (; *s; s++) {
        if (*s == '\n')
            putc_raw('\r');
        putc_raw(*s);
    }
    __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE);
}

/* A small vsnprintf: %s %c %d %u %x %lu %ld %lx %p, with a '0' flag and a width. */
static size_t vformat(char *buf, size_t cap, const char *fmt, va_list ap) {
    size_t n = 0;
#define PUT(ch) do { if (n + 1 < cap) buf[n] = (ch); n++; } while (0)
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            PUT(*fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, is_long = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        if (*fmt == 'l') {
            is_long = 1;
            fmt++;
        }
        char digits[24];
        int nd = 0, neg = 0;
        u64 v;
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            for (s = s ? s : "(null)"; *s; s++)
                PUT(*s);
            continue;
        }
        case 'c':
            PUT((char)va_arg(ap, int));
            continue;
        case '%':
            PUT('%');
            continue;
        case 'p':
            v = (u64)(uintptr_t)va_arg(ap, void *);
            PUT('0');
            PUT('x');
            do digits[nd++] = "0123456789abcdef"[v & 15]; while (v >>= 4);
            break;
        case 'x':
            v = is_long ? va_arg(ap, u64) : va_arg(ap, u32);
            do digits[nd++] = "0123456789abcdef"[v & 15]; while (v >>= 4);
            break;
        case 'u':
            v = is_long ? va_arg(ap, u64) : va_arg(ap, u32);
            do digits[nd++] = (char)('0' + v % 10); while (v /= 10);
            break;
        case 'd': {
            int64_t s = is_long ? va_arg(ap, int64_t) : va_arg(ap, int32_t);
            neg = s < 0;
            v = neg ? (u64)0 - (u64)s : (u64)s;
            do digits[nd++] = (char)('0' + v % 10); while (v /= 10);
            break;
        }
        default:
            PUT('?');
            continue;
        }
        if (neg)
            PUT('-');
        for (int i = nd; i < width; i++)
            PUT(pad);
        while (nd)
            PUT(digits[--nd]);
    }
#undef PUT
    if (cap)
        buf[n < cap ? n : cap - 1] = 0;
    return n;
}

__attribute__((format(printf, 3, 4))) static size_t format(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t n = vformat(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vformat(line, sizeof line, fmt, ap);
    va_end(ap);
    write_str(line);
}

static size_t str_len(const char *s) {
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int str_eq(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static int mem_eq(const volatile void *a, const volatile void *b, size_t n) {
    const volatile u8 *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return 0;
    return 1;
}

static int ends_with(const char *s, const char *tail) {
    size_t a = str_len(s), b = str_len(tail);
    return a >= b && str_eq(s + a - b, tail);
}

/* ---- Verdict ----------------------------------------------------------------------------- */

static unsigned failures;
static char first_failure[160];

static void note_failure(const char *what, const char *why) {
    if (failures++ == 0)
        format(first_failure, sizeof first_failure, "%s: %s", what, why);
}

__attribute__((noreturn)) static void finish(void) {
    if (failures == 0) {
        say("HIGHBOOT-LIMINE-KERNEL: PASS\n");
        outl(0xf4, EXIT_PASS);
    } else {
        say("HIGHBOOT-LIMINE-KERNEL: FAIL %s (%u failures)\n", first_failure, failures);
        outl(0xf4, EXIT_FAIL);
    }
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* One check's outcome: ok until a need() fails; details accumulate for the ok line. */
struct check {
    const char *kind;  /* "LIMINE" or "STATE" */
    const char *name;
    int bad;
    char why[200];
    char details[400];
    size_t used;
};

static struct check begin(const char *kind, const char *name) {
    struct check c = {.kind = kind, .name = name};
    return c;
}

__attribute__((format(printf, 3, 4))) static void need(struct check *c, int ok, const char *fmt, ...) {
    if (ok || c->bad)
        return;
    c->bad = 1;
    va_list ap;
    va_start(ap, fmt);
    vformat(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 2, 3))) static void detail(struct check *c, const char *fmt, ...) {
    if (c->used + 2 >= sizeof c->details)
        return;
    if (c->used)
        c->details[c->used++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    size_t n = vformat(c->details + c->used, sizeof c->details - c->used, fmt, ap);
    va_end(ap);
    c->used += n;
    if (c->used >= sizeof c->details)
        c->used = sizeof c->details - 1;
}

static void report(struct check *c) {
    if (c->bad) {
        say("%s %s bad %s\n", c->kind, c->name, c->why);
        note_failure(c->name, c->why);
    } else {
        say("%s %s ok %s\n", c->kind, c->name, c->details);
    }
}

/* A request with no response: a failure if the spec promises one here (64-bit UEFI). */
static void report_missing(const char *name, int promised, const char *why) {
    say("LIMINE %s missing %s\n", name, why);
    if (promised)
        note_failure(name, "no response");
}

/* ---- CPU --------------------------------------------------------------------------------- */

#define READ_CR(n)                                                   \
    static inline u64 read_cr##n(void) {                             \
        u64 v;                                                       \
        __asm__ volatile("mov %%cr" #n ", %0" : "=r"(v));            \
        return v;                                                    \
    }
READ_CR(0)
READ_CR(3)
READ_CR(4)
READ_CR(2)

#define READ_SEG(s)                                                  \
    static inline u16 read_##s(void) {                               \
        u16 v;                                                       \
        __asm__ volatile("mov %%" #s ", %0" : "=r"(v));              \
        return v;                                                    \
    }
READ_SEG(cs)
READ_SEG(ds)
READ_SEG(es)
READ_SEG(fs)
READ_SEG(gs)
READ_SEG(ss)

static inline u16 read_ldtr(void) {
    u16 v;
    __asm__ volatile("sldt %0" : "=r"(v));
    return v;
}
static inline u16 read_tr(void) {
    u16 v;
    __asm__ volatile("str %0" : "=r"(v));
    return v;
}

static inline u64 rdmsr(u32 msr) {
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}

static inline void cpuid(u32 leaf, u32 sub, u32 r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static inline u64 rdtsc(void) {
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

/* IA32_PAT as the protocol gives it (digest 4.1): PA0 WB, PA1 WT, PA2 UC-, PA3 UC, PA4 WP, PA5 WC;
   PA6 and PA7 unspecified. Where the CPU has no PAT there is nothing to check. */
static int pat_ok(void) {
    u32 r[4];
    cpuid(1, 0, r);
    return !(r[3] & (1u << 16)) || (rdmsr(0x277) & 0xffffffffffffULL) == 0x010500070406ULL;
}

struct __attribute__((packed)) table_register {
    u16 limit;
    u64 base;
};

#define CR0_PE (1ULL << 0)
#define CR0_WP (1ULL << 16)
#define CR0_PG (1ULL << 31)
#define CR4_PAE (1ULL << 5)
#define CR4_LA57 (1ULL << 12)
#define EFER_LME (1ULL << 8)
#define EFER_LMA (1ULL << 10)
#define EFER_NXE (1ULL << 11)
#define RFLAGS_IF (1ULL << 9)
#define RFLAGS_DF (1ULL << 10)
#define RFLAGS_VM (1ULL << 17)

/* ---- Exceptions: a fault reports itself instead of resetting the machine ------------------ */

struct interrupt_frame {
    u64 rip, cs, rflags, rsp, ss;
};

struct __attribute__((packed)) idt_gate {
    u16 offset_low, selector;
    u8 ist, type;
    u16 offset_mid;
    u32 offset_high, zero;
};

static struct idt_gate idt[32];
static struct table_register idtr;

__attribute__((noreturn)) static void exception(u64 vector, struct interrupt_frame *f, u64 code) {
    say("EXCEPTION vector=%lu error=%lx rip=%lx rsp=%lx cr2=%lx\n", vector, code, f->rip, f->rsp, read_cr2());
    char why[64];
    format(why, sizeof why, "vector %lu at %lx", vector, f->rip);
    note_failure("exception", why);
    finish();
}

#define ISR(n)                                                                                      \
    __attribute__((interrupt)) static void isr_##n(struct interrupt_frame *f) { exception(n, f, 0); }
#define ISR_CODE(n)                                                                                 \
    __attribute__((interrupt)) static void isr_##n(struct interrupt_frame *f, unsigned long code) { \
        exception(n, f, code);                                                                      \
    }
ISR(0) ISR(1) ISR(2) ISR(3) ISR(4) ISR(5) ISR(6) ISR(7) ISR_CODE(8) ISR(9) ISR_CODE(10) ISR_CODE(11)
ISR_CODE(12) ISR_CODE(13) ISR_CODE(14) ISR(15) ISR(16) ISR_CODE(17) ISR(18) ISR(19) ISR(20) ISR_CODE(21)
ISR(22) ISR(23) ISR(24) ISR(25) ISR(26) ISR(27) ISR(28) ISR_CODE(29) ISR_CODE(30) ISR(31)

static void load_idt(void) {
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

static void install_idt(void) {
    void *handlers[32] = {isr_0, isr_1, isr_2, isr_3, isr_4, isr_5, isr_6, isr_7, isr_8, isr_9, isr_10,
                          isr_11, isr_12, isr_13, isr_14, isr_15, isr_16, isr_17, isr_18, isr_19, isr_20,
                          isr_21, isr_22, isr_23, isr_24, isr_25, isr_26, isr_27, isr_28, isr_29, isr_30,
                          isr_31};
    for (int i = 0; i < 32; i++) {
        u64 a = (u64)(uintptr_t)handlers[i];
        idt[i] = (struct idt_gate){.offset_low = (u16)a, .selector = 0x28, .type = 0x8e,
                                   .offset_mid = (u16)(a >> 16), .offset_high = (u32)(a >> 32)};
    }
    idtr.limit = sizeof idt - 1;
    idtr.base = (u64)(uintptr_t)idt;
    load_idt();
}

/* ---- Page tables, read through the HHDM ---------------------------------------------------- */

static u64 hhdm;       /* 0 until the HHDM response is known */
static int levels = 4; /* from CR4.LA57 */
static u64 root_table; /* CR3's table, physical */

#define PTE_PRESENT (1ULL << 0)
#define PTE_WRITABLE (1ULL << 1)
#define PTE_USER (1ULL << 2)
#define PTE_HUGE (1ULL << 7)
#define PTE_NO_EXECUTE (1ULL << 63)
#define PTE_ADDRESS 0x000ffffffffff000ULL

struct translation {
    int present, writable, executable;
    u64 pa, page_size;
    u64 entry; /* the leaf entry */
};

static struct translation translate(u64 va) {
    struct translation t = {0};
    if (!hhdm)
        return t;
    u64 table = root_table;
    int writable = 1, no_execute = 0;
    for (int level = levels; level >= 1; level--) {
        int shift = 12 + 9 * (level - 1);
        u64 entry = ((volatile u64 *)(uintptr_t)(hhdm + table))[(va >> shift) & 511];
        if (!(entry & PTE_PRESENT))
            return t;
        writable &= !!(entry & PTE_WRITABLE);
        no_execute |= !!(entry & PTE_NO_EXECUTE);
        if (level == 1 || (level <= 3 && (entry & PTE_HUGE))) {
            u64 size = 1ULL << shift;
            t.present = 1;
            t.writable = writable;
            t.executable = !no_execute;
            t.page_size = size;
            t.entry = entry;
            t.pa = (entry & PTE_ADDRESS & ~(size - 1)) + (va & (size - 1));
            return t;
        }
        table = entry & PTE_ADDRESS;
    }
    return t;
}

/* Whether [va, va+len) is mapped (so reading it cannot fault). */
static int readable(u64 va, u64 len) {
    if (len == 0)
        return 1;
    for (u64 p = va & ~(PAGE - 1); p < va + len && p >= (va & ~(PAGE - 1)); p += PAGE)
        if (!translate(p).present)
            return 0;
    return 1;
}

/* Copy a NUL-terminated string from the loader's memory, reading only mapped bytes. */
static int copy_string(u64 va, char *out, size_t cap) {
    if (!va) {
        format(out, cap, "(NULL)");
        return 0;
    }
    for (size_t i = 0; i + 1 < cap; i++) {
        if (!readable(va + i, 1)) {
            format(out, cap, "(unmapped %lx)", va);
            return 0;
        }
        char c = *(volatile char *)(uintptr_t)(va + i);
        out[i] = c;
        if (!c)
            return 1;
    }
    out[cap - 1] = 0;
    return 1;
}

/* ---- The memory map ----------------------------------------------------------------------- */

static struct limine_memmap_entry memmap[1024];
static u64 memmap_count;

static int memmap_type_covers(u64 pa, u64 len, u64 type) {
    for (u64 i = 0; i < memmap_count; i++)
        if (memmap[i].type == type && memmap[i].base <= pa && pa + len <= memmap[i].base + memmap[i].length)
            return 1;
    return 0;
}

/* The type of the entry holding pa, or ~0 for none. */
static u64 memmap_type_at(u64 pa) {
    for (u64 i = 0; i < memmap_count; i++)
        if (memmap[i].base <= pa && pa < memmap[i].base + memmap[i].length)
            return memmap[i].type;
    return ~0ULL;
}

/* A loader structure (at an HHDM address) in bootloader-reclaimable memory. */
static int in_reclaimable(u64 va, u64 len) {
    return !memmap_count || (va >= hhdm && memmap_type_covers(va - hhdm, len, LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE));
}

/* ---- Base revision ------------------------------------------------------------------------ */

static int revision = -1; /* the base revision the loader booted with; -1 unknown */

static void check_base_revision(void) {
    u64 tag1 = base_revision[1], tag2 = base_revision[2];
    int supported = tag2 == 0;
    int loaded_valid = tag1 != 0x6a7b384944536bdcULL;
    if (loaded_valid)
        revision = (int)tag1;
    else if (supported)
        revision = BASE_REVISION;
    say("INFO base_revision=%d supported=%s loaded_revision=%d (%s)\n", BASE_REVISION, supported ? "yes" : "no",
        revision, loaded_valid ? "from the tag" : supported ? "as asked; the loader does not say" : "unknown");
    if (!supported && !EXPECT_UNSUPPORTED)
        note_failure("base_revision", "the loader does not support the revision asked for");
    if (EXPECT_UNSUPPORTED && (supported || !loaded_valid || revision >= BASE_REVISION))
        note_failure("base_revision", "a revision newer than the loader keeps: the tag must stay unacknowledged "
                                      "and name an older revision it was booted with");
    if (loaded_valid && supported && revision != BASE_REVISION)
        note_failure("base_revision", "supported, yet loaded with another revision");
}

/* What each revision promises (digest section 2). */
static int rsdp_physical(void) { return revision == 3; }
static int smbios_physical(void) { return revision == 3 || revision == 4; }
static int efi_system_table_physical(void) { return revision == 3 || revision == 4; }

/* ---- Entry state -------------------------------------------------------------------------- */

static void check_registers(void) {
    struct check c = begin("STATE", "registers");
    const char *names[] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                           "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"};
    const u64 *regs = &entry_regs.rax;
    for (int i = 0; i < 16; i++)
        if (i != 7)
            need(&c, regs[i] == 0, "%s=%lx at entry (the spec says 0)", names[i], regs[i]);
    need(&c, (entry_regs.rsp & 15) == 8, "rsp=%lx is not 16-byte aligned + 8", entry_regs.rsp);
    need(&c, entry_regs.top_word == 0, "[rsp]=%lx (the spec pushes a 0 return address)", entry_regs.top_word);
    need(&c, !(entry_regs.rflags & RFLAGS_IF), "IF set (rflags=%lx)", entry_regs.rflags);
    need(&c, !(entry_regs.rflags & RFLAGS_DF), "DF set (rflags=%lx)", entry_regs.rflags);
    need(&c, !(entry_regs.rflags & RFLAGS_VM), "VM set (rflags=%lx)", entry_regs.rflags);
    need(&c, revision < 5 || entry_regs.rflags == 2, "rflags=%lx (revision 5 on: exactly 0x2)", entry_regs.rflags);
    detail(&c, "rsp=%lx rflags=%lx", entry_regs.rsp, entry_regs.rflags);
    report(&c);
}

static void check_segments(void) {
    struct check c = begin("STATE", "segments");
    u16 cs = read_cs(), ds = read_ds(), es = read_es(), ss = read_ss(), fs = read_fs(), gs = read_gs();
    need(&c, cs == 0x28, "cs=%x (want 0x28)", cs);
    need(&c, ds == 0x30 && es == 0x30 && ss == 0x30, "ds=%x es=%x ss=%x (want 0x30)", ds, es, ss);
    detail(&c, "cs=%x ds=%x es=%x ss=%x fs=%x gs=%x", cs, ds, es, ss, fs, gs);
    report(&c);

    /* The GDT: null, 16-bit code/data, 32-bit code/data, 64-bit code/data (accessed bit aside). */
    static const u64 want[7] = {0, 0x00009a000000ffffULL, 0x000092000000ffffULL, 0x00cf9a000000ffffULL,
                                0x00cf92000000ffffULL, 0x00209a0000000000ULL, 0x0000920000000000ULL};
    static const char *kinds[7] = {"null", "code16", "data16", "code32", "data32", "code64", "data64"};
    struct check g = begin("STATE", "gdt");
    struct table_register gdtr;
    __asm__ volatile("sgdt %0" : "=m"(gdtr));
    /* Revision 5 on: then the TSS descriptor TR holds (base 0, limit 0; busy or not). */
    u16 want_limit = revision >= 5 ? 0x47 : 0x37;
    need(&g, gdtr.limit == want_limit, "limit=%x (want %x: %d entries)", gdtr.limit, want_limit,
         (want_limit + 1) / 8);
    need(&g, readable(gdtr.base, want_limit + 1), "base %lx not mapped", gdtr.base);
    if (!g.bad) {
        for (int i = 0; i < 7; i++) {
            u64 e = ((volatile u64 *)(uintptr_t)gdtr.base)[i] & ~(1ULL << 40);
            need(&g, e == want[i], "entry %d (%s) is %lx, want %lx", i, kinds[i], e, want[i]);
        }
        if (revision >= 5) {
            u64 low = ((volatile u64 *)(uintptr_t)gdtr.base)[7] & ~(1ULL << 41);
            u64 high = ((volatile u64 *)(uintptr_t)gdtr.base)[8];
            need(&g, low == 0x0000890000000000ULL && high == 0, "TSS descriptor %lx:%lx, want base 0 limit 0", high,
                 low);
        }
        need(&g, in_reclaimable(gdtr.base, want_limit + 1), "GDT at %lx not in bootloader-reclaimable memory",
             gdtr.base);
    }
    detail(&g, "base=%lx limit=%x", gdtr.base, gdtr.limit);
    report(&g);

    /* Revision 5 on: LDTR null, TR the TSS of base 0 and limit 0. */
    struct check t = begin("STATE", "ldtr_tr");
    u16 ldtr = read_ldtr(), tr = read_tr();
    if (revision >= 5) {
        need(&t, ldtr == 0, "ldtr=%x (want the null selector)", ldtr);
        need(&t, tr == 0x38, "tr=%x (want 0x38: the TSS descriptor)", tr);
        u64 limit = ~0ULL;
        if (tr)
            __asm__ volatile("lsl %1, %0" : "=r"(limit) : "r"((u64)tr) : "cc");
        need(&t, limit == 0, "TR's limit %lx (want 0)", limit);
    }
    detail(&t, "ldtr=%x tr=%x%s", ldtr, tr, revision >= 5 ? "" : " (not promised before revision 5)");
    report(&t);
}

static void check_control_registers(u64 paging_mode) {
    struct check c = begin("STATE", "control");
    u64 cr0 = read_cr0(), cr4 = read_cr4(), efer = rdmsr(0xc0000080);
    u32 r[4];
    cpuid(0x80000001, 0, r);
    int nx = !!(r[3] & (1u << 20));
    need(&c, (cr0 & (CR0_PG | CR0_PE | CR0_WP)) == (CR0_PG | CR0_PE | CR0_WP), "cr0=%lx lacks PG/PE/WP", cr0);
    need(&c, cr4 & CR4_PAE, "cr4=%lx lacks PAE", cr4);
    /* Revision 5 on: exactly PE|ET|WP|PG, and PAE (+ LA57). */
    need(&c, revision < 5 || cr0 == 0x80010011ULL, "cr0=%lx (revision 5 on: exactly 80010011)", cr0);
    need(&c, revision < 5 || (cr4 & ~CR4_LA57) == CR4_PAE, "cr4=%lx (revision 5 on: exactly PAE, LA57)", cr4);
    need(&c, (efer & (EFER_LME | EFER_LMA)) == (EFER_LME | EFER_LMA), "efer=%lx lacks LME/LMA", efer);
    need(&c, !nx || (efer & EFER_NXE), "efer=%lx: NX available but NXE clear", efer);
    if (paging_mode != (u64)-1)
        need(&c, !!(cr4 & CR4_LA57) == (paging_mode == LIMINE_PAGING_MODE_X86_64_5LVL),
             "cr4.LA57=%d but the paging mode response says %lu", !!(cr4 & CR4_LA57), paging_mode);
    detail(&c, "cr0=%lx cr4=%lx efer=%lx cr3=%lx", cr0, cr4, efer, read_cr3());
    report(&c);
}

/* ---- Responses ---------------------------------------------------------------------------- */

/* A response pointer the loader wrote: mapped, in reclaimable memory. */
static int response_ok(struct check *c, const volatile void *resp, u64 size) {
    u64 va = (u64)(uintptr_t)resp;
    need(c, readable(va, size), "response at %lx not mapped", va);
    if (c->bad)
        return 0;
    need(c, in_reclaimable(va, size), "response at %lx not in bootloader-reclaimable memory", va);
    return !c->bad;
}

static u64 hhdm_of(u64 pa) { return pa + hhdm; }

static void check_bootloader_info(void) {
    volatile struct limine_bootloader_info_response *r = bootloader_info_req.response;
    if (!r)
        return report_missing("bootloader_info", 1, "");
    struct check c = begin("LIMINE", "bootloader_info");
    if (response_ok(&c, r, sizeof *r)) {
        char name[64], version[64];
        need(&c, copy_string(r->name, name, sizeof name), "name %s", name);
        need(&c, copy_string(r->version, version, sizeof version), "version %s", version);
        detail(&c, "name=%s version=%s", name, version);
    }
    report(&c);
}

static char file_cmdline[256];

static void check_executable_cmdline(void) {
    volatile struct limine_executable_cmdline_response *r = executable_cmdline_req.response;
    if (!r)
        return report_missing("executable_cmdline", REQUIRE_NEWER, "(a request newer than Limine 8.x)");
    struct check c = begin("LIMINE", "executable_cmdline");
    if (response_ok(&c, r, sizeof *r)) {
        char s[256];
        need(&c, copy_string(r->cmdline, s, sizeof s), "cmdline %s", s);
#ifdef EXPECT_CMDLINE
        need(&c, str_eq(s, EXPECT_CMDLINE), "cmdline \"%s\", want \"%s\"", s, EXPECT_CMDLINE);
#endif
        need(&c, !file_cmdline[0] || str_eq(s, file_cmdline), "cmdline \"%s\" differs from the file's \"%s\"", s,
             file_cmdline);
        detail(&c, "cmdline=\"%s\"", s);
    }
    report(&c);
}

static void check_firmware_type(void) {
    volatile struct limine_firmware_type_response *r = firmware_type_req.response;
    if (!r)
        return report_missing("firmware_type", 1, "");
    struct check c = begin("LIMINE", "firmware_type");
    if (response_ok(&c, r, sizeof *r))
        need(&c, r->firmware_type == LIMINE_FIRMWARE_TYPE_EFI64, "type %lu, want %d (EFI64)", r->firmware_type,
             LIMINE_FIRMWARE_TYPE_EFI64);
    detail(&c, "type=%lu", r->firmware_type);
    report(&c);
}

static void check_stack_size(void) {
    volatile struct limine_stack_size_response *r = stack_size_req.response;
    if (!r)
        return report_missing("stack_size", 1, "");
    struct check c = begin("LIMINE", "stack_size");
    if (response_ok(&c, r, sizeof *r)) {
        /* The stack is [top - size, top), top = rsp at entry + 8 (the 0 return address). */
        u64 top = entry_regs.rsp + 8, lowest = top - STACK_SIZE;
        for (u64 p = lowest; p < top && !c.bad; p += PAGE) {
            struct translation t = translate(p);
            need(&c, t.present && t.writable, "stack page %lx (of %u bytes below %lx) not mapped writable", p,
                 STACK_SIZE, top);
            need(&c, !t.present || memmap_type_covers(t.pa & ~(PAGE - 1), PAGE, LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE),
                 "stack page %lx (pa %lx) not in bootloader-reclaimable memory", p, t.pa);
        }
        need(&c, (top & 15) == 0, "stack top %lx not 16-byte aligned", top);
        detail(&c, "asked=%u top=%lx lowest=%lx", STACK_SIZE, top, lowest);
    }
    report(&c);
}

static void check_hhdm(void) {
    volatile struct limine_hhdm_response *r = hhdm_req.response;
    if (!r)
        return report_missing("hhdm", 1, "");
    struct check c = begin("LIMINE", "hhdm");
    /* hhdm is set already (kernel_main needs it to walk the tables). */
    if (response_ok(&c, r, sizeof *r)) {
        u64 floor = levels == 5 ? 0xff00000000000000ULL : 0xffff800000000000ULL;
        need(&c, hhdm >= floor, "offset %lx below the higher half of %d-level paging", hhdm, levels);
        struct translation t = translate(hhdm + 0x1000);
        need(&c, t.present && t.pa == 0x1000, "offset+0x1000 maps to %lx", t.pa);
        if (revision >= 0 && revision <= 2) {
            t = translate(hhdm + 0xfffff000ULL);
            need(&c, t.present && t.pa == 0xfffff000ULL, "revision %d: the HHDM does not cover 4 GiB", revision);
        }
    }
    detail(&c, "offset=%lx", hhdm);
    report(&c);
}

/* A leaf entry's PAT index: PAT (bit 7 of a 4 KiB entry, bit 12 of a large one), PCD, PWT. */
static unsigned pat_index(struct translation t) {
    u64 pat = t.page_size == PAGE ? (t.entry >> 7) & 1 : (t.entry >> 12) & 1;
    return (unsigned)(pat << 2 | ((t.entry >> 4) & 1) << 1 | ((t.entry >> 3) & 1));
}

static u32 pixel(const volatile struct limine_framebuffer *fb, u32 red, u32 green, u32 blue) {
    return ((red >> (8 - fb->red_mask_size)) << fb->red_mask_shift) |
           ((green >> (8 - fb->green_mask_size)) << fb->green_mask_shift) |
           ((blue >> (8 - fb->blue_mask_size)) << fb->blue_mask_shift);
}

/* A colour's bits in a pixel. */
static u64 colour_mask(u8 size, u8 shift) { return size ? ((1ULL << size) - 1) << shift : 0; }

/* The mode list (response revision 1): at least one mode, each a linear RGB mode whose lines hold
 * its pixels and whose masks are apart and inside its pixel, the current mode among them. */
static void check_modes(struct check *c, const volatile struct limine_framebuffer *fb) {
    u64 count = fb->mode_count;
    need(c, count >= 1, "no video modes");
    need(c, count < 4096 && readable(fb->modes, 8 * count) && in_reclaimable(fb->modes, 8 * count),
         "modes array at %lx (%lu) not mapped in bootloader-reclaimable memory", fb->modes, count);
    int current = 0;
    for (u64 i = 0; i < count && !c->bad; i++) {
        u64 p = ((volatile u64 *)(uintptr_t)fb->modes)[i];
        need(c, readable(p, sizeof(struct limine_video_mode)) && in_reclaimable(p, sizeof(struct limine_video_mode)),
             "mode %lu at %lx not mapped in bootloader-reclaimable memory", i, p);
        if (c->bad)
            break;
        const volatile struct limine_video_mode *m = (const volatile struct limine_video_mode *)(uintptr_t)p;
        say("VIDEOMODE %lu %lux%lu %u %lu %u:%u,%u:%u,%u:%u\n", i, m->width, m->height, m->bpp, m->pitch,
            m->red_mask_size, m->red_mask_shift, m->green_mask_size, m->green_mask_shift, m->blue_mask_size,
            m->blue_mask_shift);
        u64 r = colour_mask(m->red_mask_size, m->red_mask_shift), g = colour_mask(m->green_mask_size,
            m->green_mask_shift), b = colour_mask(m->blue_mask_size, m->blue_mask_shift);
        need(c, m->width && m->height && m->bpp && m->bpp % 8 == 0 && m->bpp <= 32, "mode %lu: %lux%lu/%u", i,
             m->width, m->height, m->bpp);
        need(c, m->pitch >= m->width * (m->bpp / 8), "mode %lu: pitch %lu < width %lu * %u/8", i, m->pitch,
             m->width, m->bpp);
        need(c, m->memory_model == LIMINE_FRAMEBUFFER_RGB, "mode %lu: memory model %u", i, m->memory_model);
        need(c, r && g && b && !(r & g) && !(r & b) && !(g & b) && ((r | g | b) >> m->bpp) == 0,
             "mode %lu: masks %u:%u,%u:%u,%u:%u overlap or leave its %u-bit pixel", i, m->red_mask_size,
             m->red_mask_shift, m->green_mask_size, m->green_mask_shift, m->blue_mask_size, m->blue_mask_shift,
             m->bpp);
        current |= m->width == fb->width && m->height == fb->height && m->pitch == fb->pitch && m->bpp == fb->bpp &&
                   m->red_mask_size == fb->red_mask_size && m->red_mask_shift == fb->red_mask_shift &&
                   m->green_mask_size == fb->green_mask_size && m->green_mask_shift == fb->green_mask_shift &&
                   m->blue_mask_size == fb->blue_mask_size && m->blue_mask_shift == fb->blue_mask_shift;
    }
    need(c, current, "the current mode %lux%lu/%u pitch %lu is not among the %lu modes", fb->width, fb->height,
         fb->bpp, fb->pitch, count);
}

/* The EDID, if the loader has one: whole 128-byte blocks, the base block's header, every block's
 * checksum 0. NULL with size 0 otherwise. */
static void check_edid(struct check *c, const volatile struct limine_framebuffer *fb) {
    u64 size = fb->edid_size;
    if (!fb->edid) {
        need(c, size == 0, "edid NULL, edid_size %lu", size);
        detail(c, "edid=none");
        return;
    }
    need(c, size >= 128 && size % 128 == 0 && size <= 256 * 128, "edid_size %lu is not whole 128-byte blocks",
         size);
    need(c, readable(fb->edid, size) && in_reclaimable(fb->edid, size),
         "edid at %lx not mapped in bootloader-reclaimable memory", fb->edid);
    if (c->bad)
        return;
    const volatile u8 *e = (const volatile u8 *)(uintptr_t)fb->edid;
    static const u8 header[8] = {0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00};
    need(c, mem_eq(e, header, sizeof header), "edid header %x %x %x %x %x %x %x %x", e[0], e[1], e[2], e[3], e[4],
         e[5], e[6], e[7]);
    for (u64 block = 0; block < size / 128; block++) {
        u8 sum = 0;
        for (u64 i = 0; i < 128; i++)
            sum = (u8)(sum + e[block * 128 + i]);
        need(c, sum == 0, "edid block %lu checksum %u", block, sum);
    }
    /* The preferred timing: the first detailed timing descriptor's active pixels and lines. */
    detail(c, "edid=%lu edid_preferred=%ux%u", size, e[56] | (e[58] & 0xf0) << 4, e[59] | (e[61] & 0xf0) << 4);
}

static void check_framebuffer(void) {
    volatile struct limine_framebuffer_response *r = framebuffer_req.response;
    if (!r)
        return report_missing("framebuffer", 1, "");
    struct check c = begin("LIMINE", "framebuffer");
    if (response_ok(&c, r, sizeof *r)) {
        need(&c, r->framebuffer_count >= 1, "no framebuffers");
        need(&c, readable(r->framebuffers, 8 * r->framebuffer_count), "framebuffers array not mapped");
        for (u64 i = 0; i < r->framebuffer_count && !c.bad; i++) {
            u64 p = ((volatile u64 *)(uintptr_t)r->framebuffers)[i];
            need(&c, readable(p, sizeof(struct limine_framebuffer)), "framebuffer %lu at %lx not mapped", i, p);
            if (c.bad)
                break;
            volatile struct limine_framebuffer *fb = (volatile struct limine_framebuffer *)(uintptr_t)p;
            u64 bytes = fb->pitch * fb->height;
            need(&c, fb->bpp == 32, "bpp %u (this kernel draws 32-bit pixels only)", fb->bpp);
            need(&c, fb->memory_model == LIMINE_FRAMEBUFFER_RGB, "memory model %u", fb->memory_model);
            need(&c, fb->pitch >= fb->width * (fb->bpp / 8), "pitch %lu < width %lu", fb->pitch, fb->width);
            need(&c, fb->address >= hhdm && readable(fb->address, bytes), "pixels at %lx not mapped",
                 fb->address);
            need(&c, memmap_type_covers(fb->address - hhdm, bytes, LIMINE_MEMMAP_FRAMEBUFFER),
                 "pixels not in a FRAMEBUFFER memory map entry");
            need(&c, r->revision >= 1, "response revision %lu: no mode list", r->revision);
            check_modes(&c, fb);
            check_edid(&c, fb);
            /* Write-combining in the HHDM (digest 4.1): PAT index 5, WC in the protocol's PAT. */
            unsigned wc_pages = 0, pages = (unsigned)((bytes + PAGE - 1) / PAGE);
            for (u64 off = 0; off < bytes; off += PAGE)
                wc_pages += pat_index(translate(fb->address + off)) == 5;
            need(&c, wc_pages == pages, "%u of %u framebuffer pages write-combining (PAT index 5)", wc_pages,
                 pages);
            detail(&c, "wc_pages=%u/%u", wc_pages, pages);
            if (c.bad)
                break;
            /* Draw: a red, a green and a blue square in the top left corner. */
            u32 colours[3] = {pixel(fb, 255, 0, 0), pixel(fb, 0, 255, 0), pixel(fb, 0, 0, 255)};
            for (u64 y = 0; y < 16 && y < fb->height; y++)
                for (u64 x = 0; x < 48 && x < fb->width; x++)
                    ((volatile u32 *)(uintptr_t)(fb->address + y * fb->pitch))[x] = colours[x / 16];
            u32 back = ((volatile u32 *)(uintptr_t)fb->address)[20];
            need(&c, back == colours[1], "pixel read back %x, wrote %x", back, colours[1]);
            detail(&c, "fb%lu=%lux%lu/%u pitch=%lu at=%lx masks=%u:%u,%u:%u,%u:%u modes=%lu", i, fb->width,
                   fb->height, fb->bpp, fb->pitch, fb->address, fb->red_mask_size, fb->red_mask_shift,
                   fb->green_mask_size, fb->green_mask_shift, fb->blue_mask_size, fb->blue_mask_shift,
                   r->revision >= 1 ? fb->mode_count : 0);
        }
        detail(&c, "count=%lu revision=%lu", r->framebuffer_count, r->revision);
    }
    report(&c);
}

static u64 check_paging_mode(void) {
    volatile struct limine_paging_mode_response *r = paging_mode_req.response;
    if (!r) {
        report_missing("paging_mode", 1, "");
        return (u64)-1;
    }
    struct check c = begin("LIMINE", "paging_mode");
    u32 regs[4];
    cpuid(7, 0, regs);
    int la57 = !!(regs[2] & (1u << 16));
    if (response_ok(&c, r, sizeof *r)) {
        need(&c, r->mode + 1 >= PAGING_MIN + 1ULL && r->mode <= PAGING_MAX, "mode %lu outside the asked %d..%d", r->mode,
             PAGING_MIN, PAGING_MAX);
        need(&c, r->mode != LIMINE_PAGING_MODE_X86_64_5LVL || la57, "5-level on a CPU without LA57");
        need(&c, (r->mode == LIMINE_PAGING_MODE_X86_64_5LVL) == (levels == 5), "mode %lu but CR4.LA57=%d",
             r->mode, levels == 5);
    }
    detail(&c, "mode=%lu levels=%d asked=%d..%d cpu_la57=%d", r->mode, levels, PAGING_MIN, PAGING_MAX, la57);
    report(&c);
    return r->mode;
}

/* MP: what each AP found on itself. */
#define AP_ARRIVED (1u << 0)
#define AP_BAD_RDI (1u << 1)
#define AP_BAD_STACK (1u << 2)
#define AP_BAD_REGS (1u << 3)
#define AP_BAD_FLAGS (1u << 4)
#define AP_BAD_SEGMENTS (1u << 5)
#define AP_BAD_CR3 (1u << 6)
#define AP_BAD_LAPIC (1u << 7)
#define AP_BAD_STACK_SIZE (1u << 8)
#define AP_BAD_PAT (1u << 9)
#define AP_BAD_STATE (1u << 10)
#define AP_BAD_APIC (1u << 11)

/* Revision 5 on: the local APIC (digest 4.4), on the BSP and every AP: enabled, SVR 0x1ff, TPR 0,
   every LVT with Fixed, Lowest Priority, NMI or ExtINT delivery masked, and the LINT pins the MADT's
   (x2)APIC NMI entries name wired to NMIs (polarity and trigger from their flags). The BSP reads the
   MADT's NMI entries (lint_nmis) before it releases the APs. */
static u64 acpi_table(const char *signature);
static struct { u32 uid; u8 lint; u16 flags; } lint_nmi[16];
static unsigned lint_nmi_count;
static u64 madt_phys;

static void read_lint_nmis(void) {
    madt_phys = acpi_table("APIC");
    if (!madt_phys)
        return;
    u32 length = *(const volatile u32 *)(uintptr_t)hhdm_of(madt_phys + 4);
    for (u64 at = madt_phys + 44; at + 2 <= madt_phys + length;) {
        const volatile u8 *e = (const volatile u8 *)(uintptr_t)hhdm_of(at);
        if (e[1] < 2)
            break;
        if (lint_nmi_count < 16 && e[0] == 4 && e[1] >= 6) {
            lint_nmi[lint_nmi_count].uid = e[2] == 0xff ? 0xffffffffu : e[2];
            lint_nmi[lint_nmi_count].flags = (u16)(e[3] | e[4] << 8);
            lint_nmi[lint_nmi_count++].lint = e[5];
        } else if (lint_nmi_count < 16 && e[0] == 0x0a && e[1] >= 12) {
            lint_nmi[lint_nmi_count].uid = *(const volatile u32 *)(e + 4);
            lint_nmi[lint_nmi_count].flags = (u16)(e[2] | e[3] << 8);
            lint_nmi[lint_nmi_count++].lint = e[8];
        }
        at += e[1];
    }
}

/* The ACPI processor UID of the processor with this APIC ID (0xffffffff: not listed). */
static u32 uid_of_apic(u32 apic_id) {
    if (!madt_phys)
        return 0xffffffffu;
    u32 length = *(const volatile u32 *)(uintptr_t)hhdm_of(madt_phys + 4);
    for (u64 at = madt_phys + 44; at + 2 <= madt_phys + length;) {
        const volatile u8 *e = (const volatile u8 *)(uintptr_t)hhdm_of(at);
        if (e[1] < 2)
            break;
        if (e[0] == 0 && e[1] >= 8 && e[3] == apic_id)
            return e[2];
        if (e[0] == 9 && e[1] >= 16 && *(const volatile u32 *)(e + 4) == apic_id)
            return *(const volatile u32 *)(e + 12);
        at += e[1];
    }
    return 0xffffffffu;
}

static u32 own_apic_id(void);

/* A local APIC register (its xAPIC offset): an MSR in x2APIC mode, else through the HHDM. */
static u32 lapic_read_at(int x2, u64 base, u32 reg) {
    if (x2)
        return (u32)rdmsr(0x800 + reg / 16);
    return *(const volatile u32 *)(uintptr_t)hhdm_of(base + reg);
}

static int lapic_x2; /* the BSP's, for check_local_apic's details */
static u64 lapic_base;
static u32 lapic_read(u32 reg) { return lapic_read_at(lapic_x2, lapic_base, reg); }

/* 0 when this CPU's local APIC is as revision 5 hands it over; else what is wrong (a bit per
   finding, described into why when why is given). */
static u32 lapic_check(u32 uid, char *why, size_t cap) {
    u64 base = rdmsr(0x1b);
    int x2 = !!(base & (1u << 10));
    if (!(base & (1u << 11))) {
        if (why)
            format(why, cap, "IA32_APIC_BASE %lx: disabled", base);
        return 1;
    }
    if (!x2 && !readable(hhdm_of(base & PTE_ADDRESS), 0x400)) {
        if (why)
            format(why, cap, "the xAPIC's registers at %lx are not in the HHDM", (u64)(base & PTE_ADDRESS));
        return 2;
    }
    base &= PTE_ADDRESS;
    if (why) {
        lapic_x2 = x2;
        lapic_base = base;
    }
    u32 svr = lapic_read_at(x2, base, 0xf0), tpr = lapic_read_at(x2, base, 0x80);
    u32 max_lvt = (lapic_read_at(x2, base, 0x30) >> 16) & 0xff;
    if (svr != 0x1ff || tpr != 0) {
        if (why)
            format(why, cap, "svr=%x tpr=%x (want 1ff, 0)", svr, tpr);
        return 4;
    }
    static const u32 lvts[7][2] = {{0x2f0, 6}, {0x320, 0}, {0x330, 5}, {0x340, 4}, {0x350, 0}, {0x360, 0}, {0x370, 0}};
    for (int i = 0; i < 7; i++) {
        if (max_lvt < lvts[i][1])
            continue;
        u32 lvt = lapic_read_at(x2, base, lvts[i][0]), mode = (lvt >> 8) & 7;
        if ((mode == 0 || mode == 1 || mode == 4 || mode == 7) && !(lvt & (1u << 16))) {
            if (why)
                format(why, cap, "LVT %x = %x: delivery mode %u unmasked", lvts[i][0], lvt, mode);
            return 8;
        }
    }
    for (unsigned n = 0; n < lint_nmi_count; n++) {
        if ((lint_nmi[n].uid != 0xffffffffu && lint_nmi[n].uid != uid) || lint_nmi[n].lint > 1)
            continue;
        u32 lvt = lapic_read_at(x2, base, lint_nmi[n].lint ? 0x360 : 0x350);
        u32 want = 4u << 8 | ((lint_nmi[n].flags & 3) == 3 ? 1u << 13 : 0) |
                   (((lint_nmi[n].flags >> 2) & 3) == 3 ? 1u << 15 : 0) | 1u << 16;
        if ((lvt & (0x700u | 1u << 13 | 1u << 15 | 1u << 16)) != want) {
            if (why)
                format(why, cap, "LINT%u = %x: want NMI delivery, masked (MADT flags %x)", lint_nmi[n].lint, lvt,
                       lint_nmi[n].flags);
            return 16;
        }
    }
    return 0;
}

static void check_local_apic(void) {
    struct check c = begin("STATE", "local_apic");
    if (revision < 5) {
        detail(&c, "not promised before revision 5");
        return report(&c);
    }
    u32 uid = uid_of_apic(own_apic_id());
    char why[120] = "";
    u32 bad = lapic_check(uid, why, sizeof why);
    need(&c, !bad, "the BSP's %s", why);
    if (!bad)
        detail(&c, "svr=%x tpr=%x lint0=%x lint1=%x lvt_error=%x mode=%s nmi_entries=%u", lapic_read(0xf0),
               lapic_read(0x80), lapic_read(0x350), lapic_read(0x360), lapic_read(0x370),
               lapic_x2 ? "x2apic" : "xapic", lint_nmi_count);
    report(&c);
}

static volatile u64 mp_cpus[MAX_CPUS];
static volatile u32 ap_status[MAX_CPUS];
static volatile u32 ap_arrived;
static u64 bsp_cr3;
static int x2apic_on;

static u32 own_apic_id(void) {
    u32 r[4];
    if (x2apic_on) {
        cpuid(0xb, 0, r);
        return r[3];
    }
    cpuid(1, 0, r);
    return r[1] >> 24;
}

void ap_main(struct limine_mp_info *info, u64 rsp, u64 top_word, u64 regs_or, u64 rflags) {
    load_idt();
    u32 bad = 0;
    u64 idx = info->extra_argument;
    if (idx >= MAX_CPUS || mp_cpus[idx] != (u64)(uintptr_t)info) {
        bad |= AP_BAD_RDI;
        idx = 0; /* nowhere better to report it: the BSP's slot, which it reads too */
    }
    if (rsp != info->reserved - 8 || (rsp & 15) != 8 || top_word != 0)
        bad |= AP_BAD_STACK;
    for (u64 p = info->reserved - STACK_SIZE; p < info->reserved; p += PAGE)
        if (!translate(p).writable)
            bad |= AP_BAD_STACK_SIZE;
    if (regs_or)
        bad |= AP_BAD_REGS;
    if (rflags & (RFLAGS_IF | RFLAGS_DF))
        bad |= AP_BAD_FLAGS;
    if (read_cs() != 0x28 || read_ss() != 0x30 || read_ds() != 0x30 || read_es() != 0x30)
        bad |= AP_BAD_SEGMENTS;
    if ((read_cr3() & PTE_ADDRESS) != (bsp_cr3 & PTE_ADDRESS))
        bad |= AP_BAD_CR3;
    if (own_apic_id() != info->lapic_id)
        bad |= AP_BAD_LAPIC;
    if (!pat_ok())
        bad |= AP_BAD_PAT;
    if (revision >= 5 && (read_cr0() != 0x80010011ULL || (read_cr4() & ~CR4_LA57) != CR4_PAE || rflags != 2 ||
                          read_ldtr() != 0 || read_tr() != 0x38))
        bad |= AP_BAD_STATE;
    if (revision >= 5 && lapic_check(info->processor_id, 0, 0))
        bad |= AP_BAD_APIC;
    ap_status[idx] |= bad | AP_ARRIVED;
    __atomic_fetch_add(&ap_arrived, 1, __ATOMIC_SEQ_CST);
    for (;;)
        __asm__ volatile("cli; hlt");
}

static void check_mp(void) {
    volatile struct limine_mp_response *r = mp_req.response;
    if (!r)
        return report_missing("mp", 1, "");
    struct check c = begin("LIMINE", "mp");
    if (response_ok(&c, r, sizeof *r)) {
        u32 regs[4];
        cpuid(1, 0, regs);
        int cpu_x2apic = !!(regs[2] & (1u << 21));
        x2apic_on = !!(r->flags & LIMINE_MP_X86_64_X2APIC);
        need(&c, !x2apic_on || (MP_FLAGS & LIMINE_MP_X86_64_X2APIC), "x2APIC enabled though not asked for");
        need(&c, !x2apic_on || cpu_x2apic, "x2APIC flag set on a CPU without x2APIC");
        need(&c, r->cpu_count >= 1 && r->cpu_count <= MAX_CPUS, "cpu_count %lu", r->cpu_count);
        need(&c, readable(r->cpus, 8 * r->cpu_count), "cpus array not mapped");
        need(&c, own_apic_id() == r->bsp_lapic_id, "bsp_lapic_id %u, this CPU is %u", r->bsp_lapic_id,
             own_apic_id());
        u64 aps = 0, bsp_seen = 0;
        bsp_cr3 = read_cr3();
        for (u64 i = 0; i < r->cpu_count && !c.bad; i++) {
            u64 p = ((volatile u64 *)(uintptr_t)r->cpus)[i];
            need(&c, readable(p, sizeof(struct limine_mp_info)), "cpu %lu info at %lx not mapped", i, p);
            if (c.bad)
                break;
            struct limine_mp_info *info = (struct limine_mp_info *)(uintptr_t)p;
            mp_cpus[i] = p;
            need(&c, __atomic_load_n(&info->goto_address, __ATOMIC_SEQ_CST) == 0, "cpu %lu goto_address not NULL",
                 i);
            if (info->lapic_id == r->bsp_lapic_id) {
                bsp_seen++;
                continue;
            }
            /* `reserved` is the loader's (Limine and highboot keep the AP's stack top there): checked
             * as mapped memory the loader may reclaim, wherever it is mapped, not as an HHDM address. */
            for (u64 v = info->reserved - STACK_SIZE; v < info->reserved && !c.bad; v += PAGE) {
                struct translation t = translate(v);
                need(&c, t.present && t.writable &&
                         memmap_type_covers(t.pa & ~(PAGE - 1), PAGE, LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE),
                     "cpu %lu stack page %lx (pa %lx) not mapped writable in bootloader-reclaimable memory", i, v,
                     t.pa);
            }
            info->extra_argument = i;
            aps++;
        }
        need(&c, bsp_seen == 1, "the BSP appears %lu times in cpus", bsp_seen);
        /* Release every AP, then wait (about a second of TSC at 2 GHz and more, bounded). */
        for (u64 i = 0; i < r->cpu_count && !c.bad; i++) {
            struct limine_mp_info *info = (struct limine_mp_info *)(uintptr_t)mp_cpus[i];
            if (info->lapic_id != r->bsp_lapic_id)
                __atomic_store_n(&info->goto_address, (u64)(uintptr_t)ap_entry, __ATOMIC_SEQ_CST);
        }
        u64 start = rdtsc();
        while (!c.bad && __atomic_load_n(&ap_arrived, __ATOMIC_SEQ_CST) < aps && rdtsc() - start < 20000000000ULL)
            __asm__ volatile("pause");
        u32 arrived = ap_arrived;
        need(&c, arrived == aps, "%u of %lu APs arrived", arrived, aps);
        for (u64 i = 0; i < r->cpu_count && !c.bad; i++) {
            u32 s = ap_status[i] & ~AP_ARRIVED;
            need(&c, s == 0, "AP %lu (lapic %u) found itself wrong: %s%s%s%s%s%s%s%s%s%s%s", i,
                 ((struct limine_mp_info *)(uintptr_t)mp_cpus[i])->lapic_id, s & AP_BAD_RDI ? "rdi " : "",
                 s & AP_BAD_STACK ? "stack " : "", s & AP_BAD_REGS ? "registers " : "",
                 s & AP_BAD_FLAGS ? "rflags " : "", s & AP_BAD_SEGMENTS ? "segments " : "",
                 s & AP_BAD_CR3 ? "cr3 " : "", s & AP_BAD_LAPIC ? "lapic-id " : "",
                 s & AP_BAD_STACK_SIZE ? "stack-size " : "", s & AP_BAD_PAT ? "pat " : "",
                 s & AP_BAD_STATE ? "cr0/cr4/rflags/ldtr/tr " : "", s & AP_BAD_APIC ? "local-apic " : "");
        }
        detail(&c, "cpus=%lu bsp_lapic=%u x2apic=%d (cpu has it: %d) aps_arrived=%u", r->cpu_count,
               r->bsp_lapic_id, x2apic_on, cpu_x2apic, arrived);
    }
    report(&c);
}

static const char *memmap_type_name(u64 t) {
    static const char *names[] = {"usable", "reserved", "acpi-reclaimable", "acpi-nvs", "bad",
                                  "bootloader-reclaimable", "executable-and-modules", "framebuffer",
                                  "reserved-mapped"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

/* Copied first: other checks look memory up in it. */
static void read_memmap(void) {
    volatile struct limine_memmap_response *r = memmap_req.response;
    if (!r || !readable((u64)(uintptr_t)r, sizeof *r) || !readable(r->entries, 8 * r->entry_count))
        return;
    for (u64 i = 0; i < r->entry_count && i < 1024; i++) {
        u64 p = ((volatile u64 *)(uintptr_t)r->entries)[i];
        if (!readable(p, sizeof(struct limine_memmap_entry)))
            return;
        memmap[i] = *(volatile struct limine_memmap_entry *)(uintptr_t)p;
        memmap_count = i + 1;
    }
}

static void check_memmap(void) {
    volatile struct limine_memmap_response *r = memmap_req.response;
    if (!r)
        return report_missing("memmap", 1, "");
    struct check c = begin("LIMINE", "memmap");
    if (response_ok(&c, r, sizeof *r)) {
        need(&c, r->entry_count >= 1 && r->entry_count <= 1024, "entry_count %lu", r->entry_count);
        need(&c, memmap_count == r->entry_count, "only %lu of %lu entries readable", memmap_count, r->entry_count);
        u64 end_all = 0, end_strict = 0, usable = 0, reclaimable = 0;
        for (u64 i = 0; i < memmap_count; i++) {
            struct limine_memmap_entry *e = &memmap[i];
            say("MEMMAP %lx %lx %s\n", e->base, e->length, memmap_type_name(e->type));
            int strict = e->type == LIMINE_MEMMAP_USABLE || e->type == LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE;
            need(&c, e->type <= LIMINE_MEMMAP_RESERVED_MAPPED, "entry %lu has type %lu", i, e->type);
            need(&c, e->length > 0, "entry %lu is empty", i);
            need(&c, i == 0 || e->base >= memmap[i - 1].base, "entry %lu (%lx) not sorted", i, e->base);
            need(&c, !strict || ((e->base | e->length) & (PAGE - 1)) == 0, "%s entry %lu %lx+%lx not page aligned",
                 memmap_type_name(e->type), i, e->base, e->length);
            need(&c, e->base >= (strict ? end_all : end_strict), "entry %lu (%s %lx) overlaps an earlier one", i,
                 memmap_type_name(e->type), e->base);
            need(&c, !(e->type == LIMINE_MEMMAP_USABLE && revision <= 2 && e->base < PAGE),
                 "page 0 usable under revision %d", revision);
            if (e->base + e->length > end_all)
                end_all = e->base + e->length;
            if (strict && e->base + e->length > end_strict)
                end_strict = e->base + e->length;
            if (e->type == LIMINE_MEMMAP_USABLE)
                usable += e->length;
            if (e->type == LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE)
                reclaimable += e->length;
        }
        need(&c, usable > 0, "no usable memory");
        detail(&c, "entries=%lu usable=%lu KiB bootloader-reclaimable=%lu KiB", memmap_count, usable >> 10,
               reclaimable >> 10);
    }
    report(&c);
}

static int entered_through_request;

static void check_entry_point(void) {
    volatile struct limine_entry_point_response *r = entry_point_req.response;
    if (!r)
        return report_missing("entry_point", 1, "");
    struct check c = begin("LIMINE", "entry_point");
    if (response_ok(&c, r, sizeof *r))
        need(&c, entered_through_request, "not entered through the requested entry");
    detail(&c, "entry=%lx (the ELF entry is %p)", entry_point_req.entry, (void *)elf_entry);
    report(&c);
}

static u64 load_physical_base, load_virtual_base;

/* The ELF file: its executable segment's bytes are the ones running (text carries no relocations). */
static void check_elf_text(struct check *c, const volatile u8 *file, u64 size) {
    u64 phoff = *(const volatile u64 *)(file + 0x20);
    u16 phentsize = *(const volatile u16 *)(file + 0x36), phnum = *(const volatile u16 *)(file + 0x38);
    need(c, phoff + (u64)phentsize * phnum <= size && phentsize >= 56, "program headers outside the file");
    if (c->bad)
        return;
    u64 min_vaddr = ~0ULL;
    for (u16 i = 0; i < phnum; i++) {
        const volatile u8 *ph = file + phoff + (u64)i * phentsize;
        if (*(const volatile u32 *)ph == 1 && *(const volatile u64 *)(ph + 16) < min_vaddr)
            min_vaddr = *(const volatile u64 *)(ph + 16);
    }
    for (u16 i = 0; i < phnum; i++) {
        const volatile u8 *ph = file + phoff + (u64)i * phentsize;
        u32 type = *(const volatile u32 *)ph, flags = *(const volatile u32 *)(ph + 4);
        if (type != 1 || !(flags & 1))
            continue;
        u64 offset = *(const volatile u64 *)(ph + 8), vaddr = *(const volatile u64 *)(ph + 16);
        u64 filesz = *(const volatile u64 *)(ph + 32), n = filesz < 4096 ? filesz : 4096;
        need(c, offset + n <= size, "text segment outside the file");
        if (c->bad)
            return;
        u64 loaded = load_virtual_base + (vaddr - min_vaddr);
        need(c, mem_eq(file + offset, (const volatile void *)(uintptr_t)loaded, n),
             "the file's text differs from the running text at %lx", loaded);
        detail(c, "text_matches=%lu", n);
    }
}

static void check_executable_file(void) {
    volatile struct limine_executable_file_response *r = executable_file_req.response;
    if (!r)
        return report_missing("executable_file", 1, "");
    struct check c = begin("LIMINE", "executable_file");
    if (response_ok(&c, r, sizeof *r)) {
        u64 fp = r->executable_file;
        need(&c, readable(fp, sizeof(struct limine_file)), "limine_file at %lx not mapped", fp);
        if (!c.bad) {
            volatile struct limine_file *f = (volatile struct limine_file *)(uintptr_t)fp;
            char path[128];
            copy_string(f->path, path, sizeof path);
            copy_string(f->string, file_cmdline, sizeof file_cmdline);
            need(&c, f->size >= 64 && readable(f->address, f->size), "file contents at %lx (%lu bytes) not mapped",
                 f->address, f->size);
            need(&c, (f->address & (PAGE - 1)) == 0, "file contents at %lx not 4 KiB aligned", f->address);
            if (!c.bad) {
                const volatile u8 *b = (const volatile u8 *)(uintptr_t)f->address;
                need(&c, b[0] == 0x7f && b[1] == 'E' && b[2] == 'L' && b[3] == 'F', "does not start with \\x7fELF");
                if (!c.bad && load_virtual_base)
                    check_elf_text(&c, b, f->size);
            }
#ifdef EXPECT_CMDLINE
            need(&c, str_eq(file_cmdline, EXPECT_CMDLINE), "string \"%s\", want \"%s\"", file_cmdline,
                 EXPECT_CMDLINE);
#endif
            detail(&c, "path=%s size=%lu string=\"%s\" media=%u partition=%u", path, f->size, file_cmdline,
                   f->media_type, f->partition_index);
        }
    }
    report(&c);
}

static void check_module(void) {
    volatile struct limine_module_response *r = module_req.response;
    if (!r)
        return report_missing("module", 1, "(the boot configuration names a module)");
    struct check c = begin("LIMINE", "module");
    int required_seen = 0;
    if (response_ok(&c, r, sizeof *r)) {
        need(&c, r->revision >= 1 || !INTERNAL_MODULES, "response revision %lu: internal modules not honoured",
             r->revision);
        need(&c, readable(r->modules, 8 * r->module_count), "modules array not mapped");
#ifdef EXPECT_MODULES
        need(&c, r->module_count == EXPECT_MODULES, "%lu modules, want %d", r->module_count, EXPECT_MODULES);
#endif
        for (u64 i = 0; i < r->module_count && !c.bad; i++) {
            u64 p = ((volatile u64 *)(uintptr_t)r->modules)[i];
            need(&c, readable(p, sizeof(struct limine_file)), "module %lu at %lx not mapped", i, p);
            if (c.bad)
                break;
            volatile struct limine_file *m = (volatile struct limine_file *)(uintptr_t)p;
            char path[128], string[128], head[17] = {0};
            copy_string(m->path, path, sizeof path);
            copy_string(m->string, string, sizeof string);
            need(&c, m->size == 0 || readable(m->address, m->size), "module %lu bytes at %lx not mapped", i,
                 m->address);
            need(&c, (m->address & (PAGE - 1)) == 0, "module %lu at %lx not 4 KiB aligned", i, m->address);
            need(&c, m->size == 0 || memmap_type_covers(m->address - hhdm, m->size,
                                                        LIMINE_MEMMAP_EXECUTABLE_AND_MODULES),
                 "module %lu not in executable-and-modules memory", i);
            if (c.bad)
                break;
            u64 sum = 0;
            const volatile u8 *b = (const volatile u8 *)(uintptr_t)m->address;
            for (u64 k = 0; k < m->size; k++)
                sum = sum * 31 + b[k];
            for (u64 k = 0; k < 16 && k < m->size; k++)
                head[k] = b[k] >= 0x20 && b[k] < 0x7f ? (char)b[k] : '.';
            /* The optional internal module, when the loader found it: listed with the kernel's own string. */
            need(&c, !ends_with(path, "optional.bin") || str_eq(string, "optional internal module"),
                 "the optional internal module is listed with the string \"%s\", not the kernel's", string);
            if (ends_with(path, "required.bin")) {
                required_seen = 1;
                need(&c, str_eq(string, "required internal module"), "required.bin's string is \"%s\"", string);
            }
            detail(&c, "[%lu] path=%s string=\"%s\" size=%lu sum=%lx head=\"%s\"", i, path, string, m->size, sum,
                   head);
        }
        need(&c, !REQUIRED_MODULE || required_seen, "the required internal module is not among the modules");
        detail(&c, "count=%lu revision=%lu", r->module_count, r->revision);
    }
    report(&c);
}

/* A table pointer of the given kind (physical or HHDM), as something readable here, or 0. */
static u64 table_pointer(struct check *c, const char *what, u64 p, int physical) {
    if (physical) {
        need(c, p < hhdm, "%s %lx: revision %d gives it physical", what, p, revision);
        return readable(hhdm_of(p), 8) ? hhdm_of(p) : 0;
    }
    need(c, p >= hhdm, "%s %lx: revision %d gives it through the HHDM", what, p, revision);
    return readable(p, 8) ? p : 0;
}

static void check_rsdp(void) {
    volatile struct limine_rsdp_response *r = rsdp_req.response;
    if (!r)
        return report_missing("rsdp", 1, "");
    struct check c = begin("LIMINE", "rsdp");
    if (response_ok(&c, r, sizeof *r)) {
        u64 p = table_pointer(&c, "address", r->address, rsdp_physical());
        if (p)
            need(&c, mem_eq((const volatile void *)(uintptr_t)p, "RSD PTR ", 8), "no \"RSD PTR \" at %lx",
                 r->address);
        detail(&c, "address=%lx (%s)%s", r->address, rsdp_physical() ? "physical" : "hhdm",
               p ? " signature=\"RSD PTR \"" : " (not mapped: not read)");
    }
    report(&c);
}

static void check_smbios(void) {
    volatile struct limine_smbios_response *r = smbios_req.response;
    if (!r)
        return report_missing("smbios", 1, "");
    struct check c = begin("LIMINE", "smbios");
    if (response_ok(&c, r, sizeof *r)) {
        need(&c, r->entry_32 || r->entry_64, "neither entry point");
        if (r->entry_32) {
            u64 p = table_pointer(&c, "entry_32", r->entry_32, smbios_physical());
            need(&c, !p || mem_eq((const volatile void *)(uintptr_t)p, "_SM_", 4), "no \"_SM_\" at entry_32");
        }
        if (r->entry_64) {
            u64 p = table_pointer(&c, "entry_64", r->entry_64, smbios_physical());
            need(&c, !p || mem_eq((const volatile void *)(uintptr_t)p, "_SM3_", 5), "no \"_SM3_\" at entry_64");
        }
        detail(&c, "entry_32=%lx entry_64=%lx (%s)", r->entry_32, r->entry_64,
               smbios_physical() ? "physical" : "hhdm");
    }
    report(&c);
}

static void check_efi_system_table(void) {
    volatile struct limine_efi_system_table_response *r = efi_system_table_req.response;
    if (!r)
        return report_missing("efi_system_table", 1, "");
    struct check c = begin("LIMINE", "efi_system_table");
    if (response_ok(&c, r, sizeof *r)) {
        u64 p = table_pointer(&c, "address", r->address, efi_system_table_physical());
        if (p)
            need(&c, *(volatile u64 *)(uintptr_t)p == 0x5453595320494249ULL, "signature %lx",
                 *(volatile u64 *)(uintptr_t)p);
        detail(&c, "address=%lx (%s)%s", r->address, efi_system_table_physical() ? "physical" : "hhdm",
               p ? " signature=IBI SYST" : " (not mapped: not read)");
    }
    report(&c);
}

static void check_efi_memmap(void) {
    volatile struct limine_efi_memmap_response *r = efi_memmap_req.response;
    if (!r)
        return report_missing("efi_memmap", 1, "");
    struct check c = begin("LIMINE", "efi_memmap");
    if (response_ok(&c, r, sizeof *r)) {
        need(&c, r->desc_size >= 40 && r->memmap_size >= r->desc_size, "desc_size %lu memmap_size %lu",
             r->desc_size, r->memmap_size);
        need(&c, r->desc_version == 1, "desc_version %lu", r->desc_version);
        need(&c, r->memmap >= hhdm && readable(r->memmap, r->memmap_size), "map at %lx not mapped", r->memmap);
        /* The newer spec puts it in bootloader-reclaimable memory; Limine 8.2 leaves it in the firmware's
         * pool (EfiLoaderData), whatever type that becomes. Never usable memory, though. */
        u64 where = memmap_type_at(r->memmap - hhdm);
        need(&c, where != LIMINE_MEMMAP_USABLE, "map in usable memory");
        need(&c, !REQUIRE_NEWER || where == LIMINE_MEMMAP_BOOTLOADER_RECLAIMABLE,
             "map in %s memory, not bootloader-reclaimable", memmap_type_name(where));
        u64 conventional = 0;
        for (u64 at = 0; !c.bad && at + r->desc_size <= r->memmap_size; at += r->desc_size) {
            volatile u8 *d = (volatile u8 *)(uintptr_t)(r->memmap + at);
            u32 type = *(volatile u32 *)d;
            u64 pages = *(volatile u64 *)(d + 24);
            need(&c, type <= 15 || type >= 0x70000000, "descriptor at %lu has type %u", at, type);
            if (type == 7)
                conventional += pages;
        }
        detail(&c, "in=%s", memmap_type_name(where));
        detail(&c, "descriptors=%lu desc_size=%lu conventional=%lu KiB", r->desc_size ? r->memmap_size / r->desc_size
               : 0, r->desc_size, conventional * 4);
    }
    report(&c);
}

static void check_date_at_boot(void) {
    volatile struct limine_date_at_boot_response *r = date_at_boot_req.response;
    if (!r)
        return report_missing("date_at_boot", 1, "");
    struct check c = begin("LIMINE", "date_at_boot");
    if (response_ok(&c, r, sizeof *r))
        need(&c, r->timestamp > 1577836800 && r->timestamp < 4102444800, "timestamp %ld not in 2020..2100",
             r->timestamp);
    detail(&c, "timestamp=%ld", r->timestamp);
    report(&c);
}

static void check_executable_address(void) {
    volatile struct limine_executable_address_response *r = executable_address_req.response;
    if (!r)
        return report_missing("executable_address", 1, "");
    struct check c = begin("LIMINE", "executable_address");
    if (response_ok(&c, r, sizeof *r)) {
        u64 pb = r->physical_base, vb = r->virtual_base;
        need(&c, (pb & (PAGE - 1)) == 0, "physical_base %lx not page aligned", pb);
        need(&c, vb >= 0xffffffff80000000ULL, "virtual_base %lx not in the top 2 GiB", vb);
        need(&c, vb == (u64)(uintptr_t)__image_start, "virtual_base %lx, the image starts at %p", vb,
             (void *)__image_start);
        /* Three of its own objects, through the page tables and through the HHDM. */
        const void *probes[3] = {(const void *)check_executable_address, &rodata_probe, (const void *)&data_probe};
        const char *names[3] = {"text", "rodata", "data"};
        for (int i = 0; i < 3; i++) {
            u64 va = (u64)(uintptr_t)probes[i], pa = va - vb + pb;
            struct translation t = translate(va);
            need(&c, t.present && t.pa == pa, "%s at %lx maps to %lx, want %lx", names[i], va, t.pa, pa);
            need(&c, readable(hhdm_of(pa), 16) && mem_eq((const volatile void *)(uintptr_t)hhdm_of(pa),
                                                         (const volatile void *)probes[i], 16),
                 "%s: the HHDM bytes at %lx differ", names[i], hhdm_of(pa));
        }
        u64 size = (u64)(__image_end - __image_start);
        need(&c, memmap_type_covers(pb, size, LIMINE_MEMMAP_EXECUTABLE_AND_MODULES),
             "image %lx+%lx not in executable-and-modules memory", pb, size);
        load_physical_base = pb;
        load_virtual_base = vb;
        detail(&c, "physical_base=%lx virtual_base=%lx", pb, vb);
    }
    report(&c);
}

static void check_bootloader_performance(void) {
    volatile struct limine_bootloader_performance_response *r = bootloader_performance_req.response;
    if (!r)
        return report_missing("bootloader_performance", REQUIRE_NEWER, "(a request newer than Limine 8.x)");
    struct check c = begin("LIMINE", "bootloader_performance");
    if (response_ok(&c, r, sizeof *r))
        need(&c, r->reset_usec <= r->init_usec && r->init_usec <= r->exec_usec, "times out of order");
    detail(&c, "reset=%lu init=%lu exec=%lu", r->reset_usec, r->init_usec, r->exec_usec);
    report(&c);
}

static void check_dtb(void) {
    volatile struct limine_dtb_response *r = dtb_req.response;
    if (!r) {
        say("LIMINE dtb ok none (an ACPI machine)\n");
        return;
    }
    struct check c = begin("LIMINE", "dtb");
    need(&c, rsdp_req.response == NULL, "a device tree (%lx) on a machine with ACPI", r->dtb_ptr);
    report(&c);
}

/* ---- The page tables ---------------------------------------------------------------------- */

static const char *rights(struct translation t) {
    return t.writable ? (t.executable ? "RWX" : "RW") : (t.executable ? "RX" : "R");
}

/* Print the image's mappings, coalesced; check each segment's rights (W^X). */
static void check_mappings(void) {
    struct check c = begin("STATE", "mappings");
    u64 start = (u64)(uintptr_t)__image_start, end = (u64)(uintptr_t)__image_end;
    u64 run_va = 0, run_pa = 0, run_size = 0;
    struct translation run = {0};
    for (u64 va = start; va <= end; va += PAGE) {
        struct translation t = va < end ? translate(va) : (struct translation){0};
        if (va < end) {
            need(&c, t.present, "image page %lx not mapped", va);
            const char *want = va < (u64)(uintptr_t)__text_end     ? "RX"
                               : va < (u64)(uintptr_t)__rodata_end ? "R"
                                                                   : "RW";
            need(&c, !t.present || str_eq(rights(t), want), "page %lx is %s, its segment wants %s", va, rights(t),
                 want);
            need(&c, !(t.writable && t.executable), "page %lx is writable and executable", va);
        }
        if (run_size && t.present && t.pa == run_pa + run_size && t.writable == run.writable &&
            t.executable == run.executable) {
            run_size += PAGE;
            continue;
        }
        if (run_size)
            say("MAP %lx %lx %lx %s\n", run_va, run_pa, run_size, rights(run));
        run_va = va;
        run_pa = t.pa;
        run_size = t.present ? PAGE : 0;
        run = t;
    }
    detail(&c, "image=%lx..%lx levels=%d", start, end, levels);
    report(&c);

    struct check l = begin("STATE", "lower_half");
    volatile u64 *root = (volatile u64 *)(uintptr_t)(hhdm + root_table);
    u64 present = 0;
    for (int i = 0; i < 256; i++)
        present += root[i] & PTE_PRESENT;
    if (levels == 5 && (root[511] & PTE_PRESENT)) {
        /* 5-level paging: the last root entry's lower half (0xffff000000000000..0xffff7fffffffffff, a
         * 4-level lower half seen through 5 levels) maps nothing. */
        volatile u64 *top = (volatile u64 *)(uintptr_t)(hhdm + (root[511] & PTE_ADDRESS));
        u64 alias = 0;
        for (int i = 0; i < 256; i++)
            alias += top[i] & PTE_PRESENT;
        need(&l, alias == 0, "%lu entries below 0xffff800000000000 in the last root entry's table", alias);
    }
    if (revision >= 1) {
        need(&l, present == 0, "%lu lower-half root entries present under revision %d", present, revision);
        detail(&l, "empty");
    } else if (revision == 0) {
        /* Revision 0: identity map of 0x1000..4 GiB, the kernel's physical image among it. */
        struct translation t = translate(load_physical_base);
        need(&l, t.present && t.pa == load_physical_base, "revision 0 without the identity map at %lx",
             load_physical_base);
        t = translate(0x1000);
        need(&l, t.present && t.pa == 0x1000, "revision 0 without the identity map at 0x1000");
        t = translate(0xfffff000ULL);
        need(&l, t.present && t.pa == 0xfffff000ULL, "revision 0 without the identity map at 0xfffff000");
        /* Every memory-map region (above 4 GiB too) identity-mapped, its first and last pages. */
        u64 regions = 0;
        for (u64 i = 0; i < memmap_count; i++) {
            u64 first = memmap[i].base & ~(PAGE - 1), last = (memmap[i].base + memmap[i].length - 1) & ~(PAGE - 1);
            if (first == 0)
                first = PAGE;
            if (first > last)
                continue;
            struct translation a = translate(first), b = translate(last);
            need(&l, a.present && a.pa == first && b.present && b.pa == last,
                 "memory-map region %lx+%lx not identity-mapped", memmap[i].base, memmap[i].length);
            regions++;
        }
        /* The framebuffer write-combining there too. */
        volatile struct limine_framebuffer_response *fr = framebuffer_req.response;
        if (fr && fr->framebuffer_count) {
            volatile struct limine_framebuffer *fb =
                (volatile struct limine_framebuffer *)(uintptr_t)((volatile u64 *)(uintptr_t)fr->framebuffers)[0];
            struct translation f = translate(fb->address - hhdm);
            need(&l, f.present && pat_index(f) == 5, "the framebuffer's identity mapping is not PAT index 5");
        }
        detail(&l, "identity map (revision 0), %lu root entries, %lu memory-map regions, 1000..fffff000", present,
               regions);
    } else {
        detail(&l, "not checked: the base revision in force is unknown");
    }
    report(&l);
}

/* ---- Interrupt controllers ---------------------------------------------------------------- */

/* An ACPI table's physical address by signature, through the RSDP's XSDT or RSDT (0 if none). */
static u64 acpi_table(const char *signature) {
    volatile struct limine_rsdp_response *r = rsdp_req.response;
    if (!r || !hhdm)
        return 0;
    u64 rsdp = rsdp_physical() ? r->address : r->address - hhdm;
    if (!readable(hhdm_of(rsdp), 36))
        return 0;
    const volatile u8 *p = (const volatile u8 *)(uintptr_t)hhdm_of(rsdp);
    u64 xsdt = p[15] >= 2 ? *(const volatile u64 *)(p + 24) : 0;
    u64 root = xsdt ? xsdt : *(const volatile u32 *)(p + 16);
    u64 width = xsdt ? 8 : 4;
    if (!root || !readable(hhdm_of(root), 36))
        return 0;
    u32 length = *(const volatile u32 *)(uintptr_t)hhdm_of(root + 4);
    for (u64 at = root + 36; at + width <= root + length; at += width) {
        u64 table = width == 8 ? *(const volatile u64 *)(uintptr_t)hhdm_of(at)
                               : *(const volatile u32 *)(uintptr_t)hhdm_of(at);
        if (table && readable(hhdm_of(table), 8) &&
            mem_eq((const volatile void *)(uintptr_t)hhdm_of(table), signature, 4))
            return table;
    }
    return 0;
}

static u32 io_apic_read(u64 base, u32 reg) {
    *(volatile u32 *)(uintptr_t)hhdm_of(base) = reg;
    return *(volatile u32 *)(uintptr_t)hhdm_of(base + 0x10);
}

/* The PICs masked; every I/O APIC entry with Fixed or Lowest-priority delivery (and, from revision 5,
   NMI and ExtINT) masked (digest 4.4). The I/O APICs are read through the HHDM. */
static void check_interrupt_controllers(void) {
    struct check c = begin("STATE", "interrupt_controllers");
    u8 pic1 = inb(0x21), pic2 = inb(0xa1);
    need(&c, pic1 == 0xff && pic2 == 0xff, "PIC masks %x/%x, not ff/ff", pic1, pic2);
    detail(&c, "pic_masks=%x/%x", pic1, pic2);
    u64 madt = acpi_table("APIC");
    if (!madt || revision < 0) {
        detail(&c, "io_apics not checked (%s)", madt ? "base revision unknown" : "no MADT through the RSDP");
        return report(&c);
    }
    u32 length = *(const volatile u32 *)(uintptr_t)hhdm_of(madt + 4);
    unsigned apics = 0, entries = 0, masked = 0;
    for (u64 at = madt + 44; at + 2 <= madt + length;) {
        const volatile u8 *e = (const volatile u8 *)(uintptr_t)hhdm_of(at);
        if (e[1] < 2)
            break;
        if (e[0] == 1 && e[1] >= 12) {
            u64 base = *(const volatile u32 *)(e + 4);
            if (!readable(hhdm_of(base), 0x14)) {
                need(&c, 0, "I/O APIC at %lx not in the HHDM", base);
            } else {
                apics++;
                u32 count = ((io_apic_read(base, 1) >> 16) & 0xff) + 1;
                for (u32 n = 0; n < count; n++) {
                    u32 low = io_apic_read(base, 0x10 + 2 * n);
                    u32 mode = (low >> 8) & 7;
                    int must = mode == 0 || mode == 1 || (revision >= 5 && (mode == 4 || mode == 7));
                    entries++;
                    masked += !!(low & (1u << 16));
                    need(&c, !must || (low & (1u << 16)), "I/O APIC %lx entry %u (delivery mode %u) unmasked: %x",
                         base, n, mode, low);
                }
            }
        }
        at += e[1];
    }
    need(&c, apics > 0, "the MADT lists no I/O APIC");
    detail(&c, "io_apics=%u entries=%u masked=%u", apics, entries, masked);
    report(&c);
}

static void check_pat(void) {
    struct check c = begin("STATE", "pat");
    need(&c, pat_ok(), "IA32_PAT %lx, not WB WT UC- UC WP WC in PA0..PA5", rdmsr(0x277));
    detail(&c, "pat=%lx (the APs' in the mp line)", rdmsr(0x277));
    report(&c);
}

/* Revision 4 on: every ACPI table (RSDP, RSDT/XSDT, what they list, FACS, DSDT) inside an
   ACPI_RECLAIMABLE, ACPI_NVS or RESERVED_MAPPED entry and readable through the HHDM. */
static unsigned acpi_seen, acpi_bad;
static void acpi_covered(struct check *c, const char *what, u64 pa, u64 len) {
    if (!pa || !len)
        return;
    acpi_seen++;
    int in = memmap_type_covers(pa, len, LIMINE_MEMMAP_ACPI_RECLAIMABLE) ||
             memmap_type_covers(pa, len, LIMINE_MEMMAP_ACPI_NVS) ||
             memmap_type_covers(pa, len, LIMINE_MEMMAP_RESERVED_MAPPED);
    acpi_bad += !in;
    need(c, in, "%s at %lx+%lx outside the ACPI and reserved-mapped entries (in %s)", what, pa, len,
         memmap_type_name(memmap_type_at(pa)));
    need(c, readable(hhdm_of(pa), len), "%s at %lx+%lx not in the HHDM", what, pa, len);
}

static void check_acpi_tables(void) {
    if (revision < 4)
        return;
    struct check c = begin("STATE", "acpi_tables");
    volatile struct limine_rsdp_response *r = rsdp_req.response;
    if (!r || !hhdm) {
        need(&c, 0, "no RSDP response");
        return report(&c);
    }
    u64 rsdp = r->address - hhdm;
    const volatile u8 *p = (const volatile u8 *)(uintptr_t)r->address;
    acpi_covered(&c, "RSDP", rsdp, p[15] >= 2 ? *(const volatile u32 *)(p + 20) : 20);
    u64 xsdt = p[15] >= 2 ? *(const volatile u64 *)(p + 24) : 0;
    u64 root = xsdt ? xsdt : *(const volatile u32 *)(p + 16), width = xsdt ? 8 : 4;
    if (!c.bad && root && readable(hhdm_of(root), 8)) {
        u32 length = *(const volatile u32 *)(uintptr_t)hhdm_of(root + 4);
        acpi_covered(&c, xsdt ? "XSDT" : "RSDT", root, length);
        for (u64 at = root + 36; !c.bad && at + width <= root + length; at += width) {
            u64 t = width == 8 ? *(const volatile u64 *)(uintptr_t)hhdm_of(at)
                               : *(const volatile u32 *)(uintptr_t)hhdm_of(at);
            if (!t || !readable(hhdm_of(t), 8))
                continue;
            u32 tl = *(const volatile u32 *)(uintptr_t)hhdm_of(t + 4);
            acpi_covered(&c, "table", t, tl);
            if (mem_eq((const volatile void *)(uintptr_t)hhdm_of(t), "FACP", 4)) {
                const volatile u8 *f = (const volatile u8 *)(uintptr_t)hhdm_of(t);
                u64 targets[4] = {tl >= 40 ? *(const volatile u32 *)(f + 36) : 0,
                                  tl >= 44 ? *(const volatile u32 *)(f + 40) : 0,
                                  tl >= 140 ? *(const volatile u64 *)(f + 132) : 0,
                                  tl >= 148 ? *(const volatile u64 *)(f + 140) : 0};
                for (int i = 0; i < 4; i++)
                    if (targets[i] && readable(hhdm_of(targets[i]), 8))
                        acpi_covered(&c, i % 2 ? "DSDT" : "FACS", targets[i],
                                     *(const volatile u32 *)(uintptr_t)hhdm_of(targets[i] + 4));
            }
        }
    }
    u64 mapped = 0;
    for (u64 i = 0; i < memmap_count; i++)
        mapped += memmap[i].type == LIMINE_MEMMAP_RESERVED_MAPPED;
    detail(&c, "tables=%u outside=%u reserved_mapped_entries=%lu", acpi_seen, acpi_bad, mapped);
    report(&c);
}

/* Revision 5 on: the EFI runtime services' code and data, the SMBIOS entry points and their
   structure tables, the EFI system table, its runtime services table, configuration table array and
   firmware vendor string, each inside a RESERVED_MAPPED entry and readable through the HHDM. */
static unsigned firmware_seen, firmware_bad;
static void firmware_covered(struct check *c, const char *what, u64 pa, u64 len) {
    if (!pa || !len)
        return;
    firmware_seen++;
    int in = memmap_type_covers(pa, len, LIMINE_MEMMAP_RESERVED_MAPPED) && readable(hhdm_of(pa), len);
    firmware_bad += !in;
    need(c, in, "%s at %lx+%lx not in a reserved-mapped entry in the HHDM (in %s)", what, pa, len,
         memmap_type_name(memmap_type_at(pa)));
}

static void check_firmware_tables(void) {
    struct check c = begin("STATE", "firmware_tables");
    if (revision < 5 || !hhdm || !memmap_count) {
        detail(&c, "%s", revision < 5 ? "not promised before revision 5" : "no HHDM or memory map");
        return report(&c);
    }
    volatile struct limine_smbios_response *sm = smbios_req.response;
    if (sm && sm->entry_32 >= hhdm) {
        u64 pa = sm->entry_32 - hhdm;
        const volatile u8 *e = (const volatile u8 *)(uintptr_t)sm->entry_32;
        firmware_covered(&c, "SMBIOS entry point", pa, e[5]);
        firmware_covered(&c, "SMBIOS table", *(const volatile u32 *)(e + 0x18), *(const volatile u16 *)(e + 0x16));
    }
    if (sm && sm->entry_64 >= hhdm) {
        u64 pa = sm->entry_64 - hhdm;
        const volatile u8 *e = (const volatile u8 *)(uintptr_t)sm->entry_64;
        firmware_covered(&c, "SMBIOS 3 entry point", pa, e[6]);
        firmware_covered(&c, "SMBIOS 3 table", *(const volatile u64 *)(e + 0x10), *(const volatile u32 *)(e + 0x0c));
    }
    volatile struct limine_efi_system_table_response *st = efi_system_table_req.response;
    if (st && st->address >= hhdm) {
        const volatile u8 *t = (const volatile u8 *)(uintptr_t)st->address;
        firmware_covered(&c, "EFI system table", st->address - hhdm, *(const volatile u32 *)(t + 12));
        u64 vendor = *(const volatile u64 *)(t + 24), runtime = *(const volatile u64 *)(t + 88);
        u64 count = *(const volatile u64 *)(t + 104), config = *(const volatile u64 *)(t + 112);
        u64 vendor_len = 2;
        while (vendor && readable(hhdm_of(vendor + vendor_len - 2), 2) &&
               *(const volatile u16 *)(uintptr_t)hhdm_of(vendor + vendor_len - 2))
            vendor_len += 2;
        firmware_covered(&c, "firmware vendor string", vendor, vendor_len);
        if (runtime && readable(hhdm_of(runtime), 24))
            firmware_covered(&c, "runtime services table", runtime,
                             *(const volatile u32 *)(uintptr_t)hhdm_of(runtime + 12));
        firmware_covered(&c, "configuration table array", config, 24 * count);
    }
    volatile struct limine_efi_memmap_response *m = efi_memmap_req.response;
    unsigned runtime_ranges = 0;
    if (m && m->desc_size >= 40 && readable(m->memmap, m->memmap_size)) {
        for (u64 at = 0; at + m->desc_size <= m->memmap_size; at += m->desc_size) {
            volatile u8 *d = (volatile u8 *)(uintptr_t)(m->memmap + at);
            u32 type = *(volatile u32 *)d;
            if (type == 5 || type == 6) { /* EfiRuntimeServicesCode, EfiRuntimeServicesData */
                runtime_ranges++;
                firmware_covered(&c, type == 5 ? "EFI runtime code" : "EFI runtime data", *(volatile u64 *)(d + 8),
                                 *(volatile u64 *)(d + 24) * PAGE);
            }
        }
    }
    detail(&c, "ranges=%u outside=%u efi_runtime_ranges=%u", firmware_seen, firmware_bad, runtime_ranges);
    report(&c);
}

/* Revision 5 on (the kernel has no keep-IOMMU request): every Intel VT-d remapping unit (the DMAR's
   DRHDs) with DMA translation and interrupt remapping off (GSTS.TES, IRES), every AMD-Vi IOMMU (the
   IVRS's IVHDs) off (control register bit 0). Their registers are read through the HHDM. */
static void check_iommu(void) {
    struct check c = begin("STATE", "iommu");
    if (revision < 5) {
        detail(&c, "not promised before revision 5");
        return report(&c);
    }
    unsigned vtd = 0, amd = 0;
    u64 dmar = acpi_table("DMAR"), ivrs = acpi_table("IVRS");
    for (int k = 0; k < 2; k++) {
        u64 t = k ? ivrs : dmar;
        if (!t)
            continue;
        u32 length = *(const volatile u32 *)(uintptr_t)hhdm_of(t + 4);
        for (u64 at = t + 48; at + 4 <= t + length;) {
            const volatile u8 *e = (const volatile u8 *)(uintptr_t)hhdm_of(at);
            u16 type = k ? e[0] : *(const volatile u16 *)e, len = *(const volatile u16 *)(e + 2);
            if (len < 4)
                break;
            u64 base = len >= 16 ? *(const volatile u64 *)(e + 8) : 0;
            if (!k && type == 0 && base) {
                vtd++;
                need(&c, readable(hhdm_of(base), 0x20), "VT-d unit at %lx not in the HHDM", base);
                u32 gsts = c.bad ? 0 : *(const volatile u32 *)(uintptr_t)hhdm_of(base + 0x1c);
                need(&c, !(gsts & (1u << 31 | 1u << 25)), "VT-d unit at %lx: GSTS %x (translation or interrupt "
                     "remapping on)", base, gsts);
            } else if (k && (type == 0x10 || type == 0x11 || type == 0x40) && base) {
                amd++;
                need(&c, readable(hhdm_of(base), 0x20), "AMD-Vi IOMMU at %lx not in the HHDM", base);
                u64 control = c.bad ? 0 : *(const volatile u64 *)(uintptr_t)hhdm_of(base + 0x18);
                need(&c, !(control & 1), "AMD-Vi IOMMU at %lx: control %lx (enabled)", base, control);
            }
            at += len;
        }
    }
    detail(&c, "vtd_units=%u amd_iommus=%u", vtd, amd);
    report(&c);
}

/* ---- Main --------------------------------------------------------------------------------- */

void elf_entry(void) {
    serial_init();
    note_failure("entry_point", "entered through the ELF entry: the entry point request was not honoured");
    finish();
}

__attribute__((noreturn, used)) void kernel_main(void) {
    entered_through_request = 1;
    serial_init();
    install_idt();
    say("\nINFO highboot Limine sample kernel: base revision %d, paging %d..%d, stack %u, mp flags %d\n",
        BASE_REVISION, PAGING_MIN, PAGING_MAX, STACK_SIZE, MP_FLAGS);
    check_base_revision();

    /* What the page-table walk needs: the HHDM offset and the paging depth. */
    if (hhdm_req.response && ((u64)(uintptr_t)hhdm_req.response >> 63))
        hhdm = hhdm_req.response->offset;
    levels = (read_cr4() & CR4_LA57) ? 5 : 4;
    root_table = read_cr3() & PTE_ADDRESS;
    read_memmap();

    check_registers();
    check_segments();
    u64 mode = check_paging_mode();
    check_control_registers(mode);

    check_bootloader_info();
    check_firmware_type();
    check_stack_size();
    check_hhdm();
    check_executable_address();
    check_executable_file();
    check_executable_cmdline();
    check_framebuffer();
    check_memmap();
    check_entry_point();
    check_module();
    check_rsdp();
    check_smbios();
    check_efi_system_table();
    check_efi_memmap();
    check_date_at_boot();
    check_bootloader_performance();
    check_dtb();
    read_lint_nmis();
    check_mp();
    check_interrupt_controllers();
    check_local_apic();
    check_pat();
    check_acpi_tables();
    check_firmware_tables();
    check_iommu();
    if (hhdm)
        check_mappings();
    else
        note_failure("mappings", "no HHDM: the page tables cannot be read");
    finish();
}
