"""Test support, not part of the product: the serial report test kernels print (report), the checker that
reads a boot's report against its plan (bootcheck), and the configurations highboot's own suite builds
(matrix)."""
