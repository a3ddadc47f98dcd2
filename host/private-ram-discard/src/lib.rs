//! Preloaded into QEMU (LD_PRELOAD) for VMs whose guest RAM is a file mapped copy-on-write
//! (`memory-backend-file,share=off`: a boot template, a fork or a snapshot, mapped by many VMs).
//!
//! Why this exists: when the guest frees pages (virtio-balloon free page reporting), QEMU's
//! `ram_block_discard_range` first punches the range out of the RAM *file* with
//! `fallocate(PUNCH_HOLE)` and only then drops its own copy with `madvise(MADV_DONTNEED)`. For a
//! private mapping of a shared file the punch is wrong: it zeroes the template under every other VM
//! that maps it (QEMU warns about exactly this from 8.1 on, and every release through 10.x still
//! punches). The madvise alone is what returns the memory: the VM's private copies are dropped and
//! the range reads the file's content again, which is all a freed page may hold. No QEMU option
//! or QMP command skips the punch, and `process_madvise` cannot drop another process's pages, so
//! this library makes that one call a no-op for that one file and passes everything else through.
//!
//! The file is named by the launcher as `PYRO_PRIVATE_RAM=<st_dev>:<st_ino>`; any other file
//! (disk images, whose punches are real discards) is untouched.

use std::ffi::{c_int, c_long};
use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

extern "C" {
    fn syscall(number: c_long, ...) -> c_long;
}

const SYS_FALLOCATE: c_long = 285; // x86_64
const FALLOC_FL_PUNCH_HOLE: c_int = 0x02;

/// (st_dev, st_ino) of the copy-on-write RAM file, from the environment; None when unset or malformed.
fn private_ram() -> Option<(u64, u64)> {
    static FILE: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    *FILE.get_or_init(|| {
        let value = std::env::var("PYRO_PRIVATE_RAM").ok()?;
        let (dev, ino) = value.split_once(':')?;
        Some((dev.parse().ok()?, ino.parse().ok()?))
    })
}

fn is_private_ram(fd: c_int) -> bool {
    let Some(target) = private_ram() else { return false };
    if fd < 0 {
        return false;
    }
    // Borrowed, never closed: the descriptor is QEMU's.
    let file = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    match file.metadata() {
        Ok(meta) => (meta.dev(), meta.ino()) == target,
        Err(_) => false,
    }
}

fn fallocate_or_skip(fd: c_int, mode: c_int, offset: i64, len: i64) -> c_int {
    if mode & FALLOC_FL_PUNCH_HOLE != 0 && is_private_ram(fd) {
        // What QEMU asked of the file is done by its own madvise(MADV_DONTNEED) right after this.
        return 0;
    }
    // libc's syscall() returns -1 and sets errno, as fallocate does.
    unsafe { syscall(SYS_FALLOCATE, fd as c_long, mode as c_long, offset as c_long, len as c_long) as c_int }
}

/// glibc's `fallocate64` (what QEMU, built with 64-bit file offsets, links against).
#[no_mangle]
pub extern "C" fn fallocate64(fd: c_int, mode: c_int, offset: i64, len: i64) -> c_int {
    fallocate_or_skip(fd, mode, offset, len)
}

/// glibc's `fallocate` (the same call on x86_64).
#[no_mangle]
pub extern "C" fn fallocate(fd: c_int, mode: c_int, offset: i64, len: i64) -> c_int {
    fallocate_or_skip(fd, mode, offset, len)
}
