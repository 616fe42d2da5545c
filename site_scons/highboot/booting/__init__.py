"""Booting under QEMU + OVMF: firmware lookup, boot media, headless and interactive boots (qemu)."""
