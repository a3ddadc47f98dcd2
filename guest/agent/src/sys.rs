//! Thin declarations of the libc calls std does not expose, with safe wrappers.
//! std links glibc statically (+crt-static), so these resolve without any crate.

#![allow(non_camel_case_types)]

use std::ffi::CString;
use std::io;
use std::os::raw::{c_char, c_int, c_long, c_ulong, c_void};

pub type pid_t = i32;

#[repr(C)]
pub struct timespec {
    pub tv_sec: c_long,
    pub tv_nsec: c_long,
}

extern "C" {
    fn futimens(fd: c_int, times: *const timespec) -> c_int;
    fn mount(src: *const c_char, target: *const c_char, fstype: *const c_char, flags: c_ulong, data: *const c_void) -> c_int;
    fn sethostname(name: *const c_char, len: usize) -> c_int;
    pub fn fork() -> pid_t;
    pub fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    pub fn setsid() -> pid_t;
    pub fn dup2(old: c_int, new: c_int) -> c_int;
    pub fn chdir(path: *const c_char) -> c_int;
    pub fn _exit(code: c_int) -> !;
    fn pipe2(fds: *mut c_int, flags: c_int) -> c_int;
    pub fn close(fd: c_int) -> c_int;
    pub fn write(fd: c_int, buf: *const c_void, n: usize) -> isize;
    pub fn waitpid(pid: pid_t, status: *mut c_int, options: c_int) -> pid_t;
    fn kill(pid: pid_t, sig: c_int) -> c_int;
    fn reboot(cmd: c_int) -> c_int;
    fn sync();
    fn clock_settime(clock: c_int, tp: *const timespec) -> c_int;
    pub fn signal(sig: c_int, handler: usize) -> usize;
    fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int;
    fn ioctl(fd: c_int, req: c_ulong, arg: *mut c_void) -> c_int;
    fn openpty(master: *mut c_int, slave: *mut c_int, name: *mut c_char, termp: *const c_void, winp: *const WinSize) -> c_int;
}

#[repr(C)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

pub const TIOCSCTTY: c_ulong = 0x540e;

/// A new pseudo-terminal pair (master, slave), both close-on-exec, with the given size.
pub fn open_pty(cols: u16, rows: u16) -> io::Result<(c_int, c_int)> {
    let (mut master, mut slave) = (0 as c_int, 0 as c_int);
    let size = WinSize { rows, cols, xpixel: 0, ypixel: 0 };
    check(unsafe { openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) })?;
    for fd in [master, slave] {
        unsafe { fcntl(fd, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */) };
    }
    Ok((master, slave))
}

/// Makes `fd` the controlling terminal of the calling (new-session) process. Child side of fork.
pub unsafe fn set_controlling_tty(fd: c_int) {
    ioctl(fd, TIOCSCTTY, std::ptr::null_mut());
}

extern "C" {
    /// Variadic in C; its third argument travels in a register whatever its type (int or pointer).
    fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int;
}

/// The foreground process group of a terminal (TIOCGPGRP on its master side).
pub fn foreground_group(master: c_int) -> Option<pid_t> {
    const TIOCGPGRP: c_ulong = 0x540f;
    let mut pgrp: pid_t = 0;
    let rc = unsafe { ioctl(master, TIOCGPGRP, &mut pgrp as *mut pid_t as *mut c_void) };
    if rc < 0 {
        None
    } else {
        Some(pgrp)
    }
}

pub const O_CLOEXEC: c_int = 0o2000000;
pub const SIGKILL: c_int = 9;
pub const SIGPIPE: c_int = 13;
pub const SIG_DFL: usize = 0;
pub const MS_NOSUID: c_ulong = 2;
pub const MS_NODEV: c_ulong = 4;
pub const MS_NOEXEC: c_ulong = 8;
const RB_POWER_OFF: c_int = 0x4321_fedc_u32 as c_int;
const CLOCK_REALTIME: c_int = 0;

pub fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

pub fn check(rc: c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn mount_fs(source: &str, target: &str, fstype: &str, flags: c_ulong, data: &str) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    check(unsafe { mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr() as *const c_void) })
}

/// Freezes the filesystem holding `fd` (FIFREEZE): writes are flushed, the journal checkpointed, and
/// new writes block until thaw_fs.
pub fn freeze_fs(fd: c_int) -> io::Result<()> {
    const FIFREEZE: c_ulong = 0xc004_5877;
    check(unsafe { ioctl(fd, FIFREEZE, std::ptr::null_mut()) })
}

/// Thaws the filesystem holding `fd` (FITHAW); EINVAL when it was not frozen.
pub fn thaw_fs(fd: c_int) -> io::Result<()> {
    const FITHAW: c_ulong = 0xc004_5878;
    check(unsafe { ioctl(fd, FITHAW, std::ptr::null_mut()) })
}

/// Drops a block device's cached buffers (BLKFLSBUF), so the next reads come from the device.
pub fn flush_block_buffers(device: &str) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    const BLKFLSBUF: c_ulong = 0x1261;
    let file = std::fs::File::open(device)?;
    check(unsafe { ioctl(file.as_raw_fd(), BLKFLSBUF, std::ptr::null_mut()) })
}

pub fn set_hostname(name: &str) -> io::Result<()> {
    check(unsafe { sethostname(name.as_ptr() as *const c_char, name.len()) })
}

pub fn make_pipe() -> io::Result<(c_int, c_int)> {
    let mut fds = [0 as c_int; 2];
    check(unsafe { pipe2(fds.as_mut_ptr(), O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// Sends a signal to a whole process group (every command runs in its own session).
pub fn kill_group(pgid: pid_t, sig: c_int) {
    if pgid > 1 {
        unsafe {
            kill(-pgid, sig);
        }
    }
}

/// Sets an open file's access and modification times to `secs` (whole seconds, as tar keeps them).
pub fn set_file_times(f: &std::fs::File, secs: i64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let times = [timespec { tv_sec: secs as c_long, tv_nsec: 0 }, timespec { tv_sec: secs as c_long, tv_nsec: 0 }];
    check(unsafe { futimens(f.as_raw_fd(), times.as_ptr()) })
}

extern "C" {
    fn posix_fadvise(fd: c_int, offset: i64, len: i64, advice: c_int) -> c_int;
    fn syncfs(fd: c_int) -> c_int;
}

/// Starts reading `len` bytes of a file at `offset` into the page cache and returns at once
/// (POSIX_FADV_WILLNEED): many such reads are in flight together, where a read() would wait for
/// each. Advice only: a failure changes nothing but speed.
pub fn read_ahead(f: &std::fs::File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    const POSIX_FADV_WILLNEED: c_int = 3;
    unsafe { posix_fadvise(f.as_raw_fd(), offset as i64, len as i64, POSIX_FADV_WILLNEED) };
}

/// Writes the dirty data of the one filesystem holding `f` to its disk and flushes that disk (syncfs).
pub fn sync_filesystem(f: &std::fs::File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    check(unsafe { syncfs(f.as_raw_fd()) })
}

pub fn sync_all() {
    unsafe { sync() }
}

pub fn power_off() -> io::Result<()> {
    check(unsafe { reboot(RB_POWER_OFF) })
}

/// Adds `bytes` to the kernel's input pool, credited as full entropy (RNDADDENTROPY), then makes the
/// CRNG reseed from it now (RNDRESEEDCRNG), so /dev/urandom and random UUIDs change at once.
pub fn add_entropy_and_reseed(bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    const RNDADDENTROPY: c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: c_ulong = 0x5207;
    let random = std::fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(bytes);
    check(unsafe { ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_mut_ptr() as *mut c_void) })?;
    check(unsafe { ioctl(random.as_raw_fd(), RNDRESEEDCRNG, std::ptr::null_mut()) })
}

extern "C" {
    fn gettid() -> pid_t;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, sig: c_int) -> c_int;
    fn pthread_sigmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigtimedwait(set: *const SigSet, info: *mut c_void, timeout: *const timespec) -> c_int;
}

/// glibc's sigset_t (1024 bits).
#[repr(C)]
pub struct SigSet([u64; 16]);

const SIGIO: c_int = 29;

fn sigio_set() -> SigSet {
    let mut set = SigSet([0; 16]);
    unsafe {
        sigemptyset(&mut set);
        sigaddset(&mut set, SIGIO);
    }
    set
}

extern "C" fn ignore_signal(_: c_int) {}

/// Asks the kernel for SIGIO to the calling thread when the host side of the virtio port `fd` opens
/// (virtio_console sends it on the host's VIRTIO_CONSOLE_PORT_OPEN), and keeps SIGIO blocked in this
/// thread so it waits, pending, for wait_for_host. Threads this one spawns must call
/// unblock_host_signal (a blocked mask is inherited, and so by the commands they fork).
pub fn notify_on_host_open(fd: c_int) -> io::Result<()> {
    const F_GETFL: c_int = 3;
    const F_SETFL: c_int = 4;
    const F_SETOWN_EX: c_int = 15;
    const F_OWNER_TID: c_int = 0;
    const O_ASYNC: c_int = 0o20000;
    const SIG_BLOCK: c_int = 0;
    unsafe {
        // A handler, not the default action (which ends a process that is not PID 1); reset on exec.
        signal(SIGIO, ignore_signal as *const () as usize);
        check(pthread_sigmask(SIG_BLOCK, &sigio_set(), std::ptr::null_mut()))?;
        let mut owner: [c_int; 2] = [F_OWNER_TID, gettid()];
        check(fcntl(fd, F_SETOWN_EX, owner.as_mut_ptr() as usize))?;
        let flags = fcntl(fd, F_GETFL, 0);
        check(if flags < 0 { flags } else { fcntl(fd, F_SETFL, (flags | O_ASYNC) as usize) })
    }
}

/// Undoes notify_on_host_open's blocked SIGIO in a thread it spawned.
pub fn unblock_host_signal() {
    const SIG_UNBLOCK: c_int = 1;
    unsafe {
        pthread_sigmask(SIG_UNBLOCK, &sigio_set(), std::ptr::null_mut());
    }
}

/// Sleeps until the host opens the port (a pending SIGIO) or `ms` pass.
pub fn wait_for_host(ms: u64) {
    let ts = timespec { tv_sec: (ms / 1000) as c_long, tv_nsec: ((ms % 1000) * 1_000_000) as c_long };
    unsafe {
        sigtimedwait(&sigio_set(), std::ptr::null_mut(), &ts);
    }
}

pub fn set_realtime_ms(ms: u64) -> io::Result<()> {
    let ts = timespec { tv_sec: (ms / 1000) as c_long, tv_nsec: ((ms % 1000) * 1_000_000) as c_long };
    check(unsafe { clock_settime(CLOCK_REALTIME, &ts) })
}

/// Brings an interface up (SIOCGIFFLAGS / SIOCSIFFLAGS with IFF_UP): the guest has no `ip` in minbase.
pub fn interface_up(name: &str) -> io::Result<()> {
    const AF_INET: c_int = 2;
    const SOCK_DGRAM: c_int = 2;
    const SIOCGIFFLAGS: c_ulong = 0x8913;
    const SIOCSIFFLAGS: c_ulong = 0x8914;
    const IFF_UP: i16 = 1;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: i16,
        pad: [u8; 22],
    }
    if name.len() >= 16 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    let mut req = IfReq { name: [0; 16], flags: 0, pad: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let fd = unsafe { socket(AF_INET, SOCK_DGRAM | O_CLOEXEC, 0) };
    check(fd)?;
    let result = (|| {
        check(unsafe { ioctl(fd, SIOCGIFFLAGS, &mut req as *mut IfReq as *mut c_void) })?;
        req.flags |= IFF_UP;
        check(unsafe { ioctl(fd, SIOCSIFFLAGS, &mut req as *mut IfReq as *mut c_void) })
    })();
    unsafe { close(fd) };
    result
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SockAddrIn {
    family: u16,
    port: u16,
    addr: [u8; 4],
    zero: [u8; 8],
}

fn inet(addr: [u8; 4]) -> SockAddrIn {
    SockAddrIn { family: 2, port: 0, addr, zero: [0; 8] }
}

#[repr(C)]
struct IfReqAddr {
    name: [u8; 16],
    addr: SockAddrIn,
    pad: [u8; 8],
}

#[repr(C)]
struct RtEntry {
    pad1: c_ulong,
    dst: SockAddrIn,
    gateway: SockAddrIn,
    genmask: SockAddrIn,
    flags: u16,
    pad2: i16,
    pad3: c_ulong,
    pad4: *mut c_void,
    metric: i16,
    dev: *mut c_char,
    mtu: c_ulong,
    window: c_ulong,
    irtt: u16,
}

/// Static IPv4 setup: address/netmask on `name`, default route via `gateway` (no DHCP client in minbase).
pub fn configure_ipv4(name: &str, addr: [u8; 4], netmask: [u8; 4], gateway: [u8; 4]) -> io::Result<()> {
    const SIOCSIFADDR: c_ulong = 0x8916;
    const SIOCSIFNETMASK: c_ulong = 0x891c;
    const SIOCADDRT: c_ulong = 0x890b;
    const RTF_UP: u16 = 1;
    const RTF_GATEWAY: u16 = 2;
    if name.len() >= 16 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    let mut ifname = [0u8; 16];
    ifname[..name.len()].copy_from_slice(name.as_bytes());
    let fd = unsafe { socket(2, 2 | O_CLOEXEC, 0) };
    check(fd)?;
    let result = (|| {
        let mut req = IfReqAddr { name: ifname, addr: inet(addr), pad: [0; 8] };
        check(unsafe { ioctl(fd, SIOCSIFADDR, &mut req as *mut IfReqAddr as *mut c_void) })?;
        let mut mask = IfReqAddr { name: ifname, addr: inet(netmask), pad: [0; 8] };
        check(unsafe { ioctl(fd, SIOCSIFNETMASK, &mut mask as *mut IfReqAddr as *mut c_void) })?;
        interface_up(name)?;
        let mut route = RtEntry {
            pad1: 0,
            dst: inet([0; 4]),
            gateway: inet(gateway),
            genmask: inet([0; 4]),
            flags: RTF_UP | RTF_GATEWAY,
            pad2: 0,
            pad3: 0,
            pad4: std::ptr::null_mut(),
            metric: 0,
            dev: std::ptr::null_mut(),
            mtu: 0,
            window: 0,
            irtt: 0,
        };
        check(unsafe { ioctl(fd, SIOCADDRT, &mut route as *mut RtEntry as *mut c_void) })
    })();
    unsafe { close(fd) };
    result
}
