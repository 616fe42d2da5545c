/* A multiboot2 kernel for tools/bench: its first instruction reads the TSC, which it prints on
 * COM1 (`INFO tsc_kernel=<n>`, like highboot's sample kernel) before ending QEMU through
 * isa-debug-exit. GRUB enters it in 32-bit protected mode (multiboot2 on EFI without the EFI
 * tags: boot services exited, paging off), so this is i386 code and the 64-bit TSC is printed
 * with two 32-bit divisions per digit. */

#define MB2_MAGIC        0xe85250d6
#define MB2_ARCH_I386    0
#define COM1             0x3f8
#define COM1_LSR         (COM1 + 5)
#define LSR_THR_EMPTY    0x20
#define DEBUG_EXIT       0xf4
#define EXIT_PASS        0x10

    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header
    .long -(MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header))
    .balign 8
    .short 0, 0                 /* end tag: type 0, flags 0, size 8 */
    .long 8
mb2_header_end:

    .text
    .code32
    .globl _start
_start:
    rdtsc                       /* the kernel's first instruction: edx:eax */
    mov $stack_top, %esp
    mov %edx, %esi              /* esi:edi = TSC */
    mov %eax, %edi

    mov $prefix, %ebx
    call puts

    /* Digits, least significant first, onto the stack; 0 marks the end. */
    push $0
    mov $10, %ecx
1:  xor %edx, %edx
    mov %esi, %eax
    div %ecx                    /* high / 10 */
    mov %eax, %esi
    mov %edi, %eax
    div %ecx                    /* (high % 10 : low) / 10 */
    mov %eax, %edi
    add $'0', %edx
    push %edx
    mov %esi, %eax
    or %edi, %eax
    jnz 1b
2:  pop %eax
    test %eax, %eax
    jz 3f
    call putc
    jmp 2b
3:  mov $suffix, %ebx
    call puts

    mov $DEBUG_EXIT, %dx
    mov $EXIT_PASS, %eax
    out %eax, %dx
4:  cli
    hlt
    jmp 4b

/* putc: the byte in al to COM1, once the transmitter is empty. */
putc:
    push %eax
    mov $COM1_LSR, %dx
5:  in %dx, %al
    test $LSR_THR_EMPTY, %al
    jz 5b
    pop %eax
    mov $COM1, %dx
    out %al, %dx
    ret

/* puts: the NUL-terminated string at ebx. */
puts:
    movzbl (%ebx), %eax
    test %eax, %eax
    jz 6f
    call putc
    inc %ebx
    jmp puts
6:  ret

    .section .rodata
prefix: .asciz "\r\nINFO tsc_kernel="
suffix: .asciz "\r\n"

    .bss
    .balign 16
    .skip 4096
stack_top:
