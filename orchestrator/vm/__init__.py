"""The guest: its initramfs, the QEMU machine that boots it and the SSH link into it."""
