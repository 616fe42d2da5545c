"""The address space, planned at build time: the planner's phases from kernel and layout to a BootPlan
(planner), the direct map's sizing rule (directmap), page tables as data with their encoder and
reference walker (paging), and the map a user reads (addrmap: `scons map`)."""
