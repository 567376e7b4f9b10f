"""The unpacked-kernel cache: what it keeps, when it refuses, and that a changed file misses."""

from __future__ import annotations

import os

from hypercalls.xen.kernel_cache import KernelCache

ELF = b"\x7fELF" + b"\x02" * 60


def test_an_unpacked_image_is_kept_and_found_again(tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"MZ bzImage with an xz payload")
    cache = KernelCache(tmp_path / "cache")
    assert cache.lookup(str(kernel)) is None
    entry = cache.store(str(kernel), memoryview(ELF))
    assert entry is not None and entry.read_bytes() == ELF
    assert cache.lookup(str(kernel)) == entry
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == "0o700"
    assert oct(entry.stat().st_mode & 0o777) == "0o600"


def test_a_rewritten_kernel_misses_even_with_its_old_size_and_mtime(tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"MZ first kernel")
    cache = KernelCache(tmp_path / "cache")
    cache.store(str(kernel), ELF)
    st = kernel.stat()
    kernel.write_bytes(b"MZ other kernel")  # same size
    os.utime(kernel, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back; the ctime moved on
    assert cache.lookup(str(kernel)) is None


def test_nothing_is_kept_for_an_elf_kernel_or_an_image_that_is_not_elf(tmp_path):
    cache = KernelCache(tmp_path / "cache")
    elf_kernel = tmp_path / "vmlinux"
    elf_kernel.write_bytes(ELF)
    assert cache.store(str(elf_kernel), ELF) is None
    bz = tmp_path / "vmlinuz"
    bz.write_bytes(b"MZ")
    assert cache.store(str(bz), b"not an elf image") is None
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_only_the_most_recently_used_entries_stay(tmp_path):
    cache = KernelCache(tmp_path / "cache", keep=2)
    kernels = []
    for i in range(3):
        kernel = tmp_path / f"vmlinuz-{i}"
        kernel.write_bytes(b"MZ %d" % i)
        kernels.append(str(kernel))
    for i in range(2):
        entry = cache.store(kernels[i], ELF)
        os.utime(entry, ns=((i + 1) * 10**9, (i + 1) * 10**9))  # kernel 0 stored first, then 1
    assert cache.lookup(kernels[0]) is not None  # used again: now the newest
    cache.store(kernels[2], ELF)
    assert not cache.entry_for(kernels[1]).exists()
    assert cache.entry_for(kernels[0]).exists() and cache.entry_for(kernels[2]).exists()


def test_an_unwritable_cache_costs_nothing_but_speed(tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"MZ")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the directory should be")
    assert KernelCache(blocker / "kernels").store(str(kernel), ELF) is None


def test_a_kernel_given_with_its_digest_is_found_by_content_wherever_it_lies(tmp_path):
    """A bootloader copies the guest's kernel to a new file at each boot: keyed by its SHA-256, the
    unpacked image is found again (and a different kernel, by its own digest, is not)."""
    first, second = tmp_path / "boot_kernel.a", tmp_path / "boot_kernel.b"
    first.write_bytes(b"MZ the guest's kernel")
    second.write_bytes(b"MZ the guest's kernel")
    cache = KernelCache(tmp_path / "cache")
    entry = cache.store(str(first), ELF, digest="ab" * 32)
    first.unlink()
    assert cache.lookup(str(second), digest="ab" * 32) == entry
    assert cache.lookup(str(second)) is None  # by identity: another file
    assert cache.lookup(str(second), digest="cd" * 32) is None
