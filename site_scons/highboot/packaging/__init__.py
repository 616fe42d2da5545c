"""Shipping the loader: named checks of the PE/COFF file (pecheck), Secure Boot keys and signing
(signing), and the GPT / FAT32 disk image (image)."""
