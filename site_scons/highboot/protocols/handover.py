"""The protocol's part of a boot plan (BootPlan.handover): which protocol the kernel speaks and what
it decided for the other phases (the stack it asks for, its entry point, whether the APs are started
and the kernel file kept), with the protocol's own planned handover when it has one."""

from __future__ import annotations

from dataclasses import dataclass

from highboot.protocols.limine.handover import LimineHandover


@dataclass(frozen=True)
class Handover:
    protocol: str  # a PROTOCOLS name
    stack_size: int = 0  # the stack the kernel asks for (the layout's when larger); 0: none asked
    ap_stack_size: int = 0  # each AP's stack at least (AP_STACK_SIZE when larger); 0: none asked
    entry: int | None = None  # the entry point the kernel asks for, instead of the ELF's (placed address)
    start_aps: bool = True  # the protocol has the APs started (SMP still decides)
    keep_kernel_file: bool = False  # the protocol hands the kernel its file whatever KEEP_KERNEL_FILE says
    limine: LimineHandover | None = None
