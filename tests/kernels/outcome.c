/* A kernel for the tests of `scons test` with a project's [test] table: one outcome per build,
 * chosen with -DOUTCOME=...: each of the ways a boot passes or fails. Entered by highboot in long
 * mode (RDI: the boot info, unused here); it needs nothing but the serial port and the
 * isa-debug-exit port QEMU is given. */

#define PASS_BY_EXIT 1   /* writes 0x10 to isa-debug-exit: QEMU exits 33 */
#define PASS_BY_SERIAL 2 /* prints the success line, then waits */
#define FAIL_BY_EXIT 3   /* writes 0x11: QEMU exits 35 */
#define FAIL_PATTERN 4   /* prints a line the failure pattern matches, then waits */
#define HANG 5           /* prints a line and waits for ever */
#define TRIPLE_FAULT 6   /* an empty IDT, then int3: #GP, #DF, triple fault */

#ifndef OUTCOME
#error "build with -DOUTCOME=<one of the outcomes above>"
#endif

static inline void outb(unsigned short port, unsigned char value) {
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline unsigned char inb(unsigned short port) {
    unsigned char value;
    __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
    return value;
}

static void say(const char *text) {
    for (; *text; text++) {
        while (!(inb(0x3f8 + 5) & 0x20)) {
        }
        outb(0x3f8, (unsigned char)*text);
    }
}

static void debug_exit(unsigned int code) {
    __asm__ volatile("outl %0, %1" : : "a"(code), "Nd"((unsigned short)0xf4));
}

static __attribute__((noreturn)) void wait_for_ever(void) {
    for (;;) {
        __asm__ volatile("cli; hlt");
    }
}

void _start(void) {
    say("outcome kernel: running its tests\n");
#if OUTCOME == PASS_BY_EXIT
    say("outcome kernel: passing by exit code\n");
    debug_exit(0x10);
#elif OUTCOME == PASS_BY_SERIAL
    say("ALL TESTS PASSED\n");
#elif OUTCOME == FAIL_BY_EXIT
    say("outcome kernel: failing by exit code\n");
    debug_exit(0x11);
#elif OUTCOME == FAIL_PATTERN
    say("PANIC: the outcome kernel panics on purpose\n");
#elif OUTCOME == HANG
    say("outcome kernel: hanging\n");
#elif OUTCOME == TRIPLE_FAULT
    say("outcome kernel: faulting with no IDT\n");
    struct __attribute__((packed)) {
        unsigned short limit;
        unsigned long base;
    } empty = {0, 0};
    __asm__ volatile("lidt %0; int3" : : "m"(empty));
#endif
    wait_for_ever();
}
