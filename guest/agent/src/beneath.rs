//! Path resolution confined to a directory, for every file operation on a /workspace path.
//!
//! Anything in the guest can plant symlinks in /workspace (`ln -s / /workspace/root`). A plain
//! path-based open follows them, so a host request for `/workspace/root/etc/shadow` would act on
//! the guest's /etc. Every workspace path is therefore opened with openat2(2) relative to a
//! descriptor of /workspace with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`: the kernel refuses
//! (EXDEV) any resolution that would leave /workspace — through `..`, an absolute symlink, or a
//! relative symlink climbing out — and never follows /proc magic links. Everything after the first
//! open works on descriptors with *at calls, so no path is looked up twice.
//!
//! RESOLVE_BENEATH, not RESOLVE_IN_ROOT: IN_ROOT would reinterpret an absolute link such as
//! `/workspace/conf -> /etc` as `/workspace/etc`, silently acting on a different file from the one
//! every guest program sees. BENEATH refuses such a link with a clear error instead. The cost: an
//! absolute link that points inside /workspace (`/workspace/a -> /workspace/b`) is refused too;
//! relative links that stay inside /workspace (`a -> b`, `x/y -> ../z`) are followed.

use crate::sys::{check, cstr};
use std::fs::File;
use std::io;
use std::os::raw::{c_char, c_int, c_long, c_uint};
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};

pub const WORKSPACE_ROOT: &str = "/workspace";

const SYS_OPENAT2: c_long = 437;
const SYS_GETDENTS64: c_long = 217;
const AT_FDCWD: c_int = -100;
const AT_REMOVEDIR: c_int = 0x200;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const EXDEV: i32 = 18;
const ELOOP: i32 = 40;
const EEXIST: i32 = 17;

pub const O_RDONLY: u64 = 0;
pub const O_WRONLY: u64 = 0o1;
pub const O_RDWR: u64 = 0o2;
pub const O_CREAT: u64 = 0o100;
pub const O_EXCL: u64 = 0o200;
pub const O_APPEND: u64 = 0o2000;
pub const O_NONBLOCK: u64 = 0o4000;
pub const O_DIRECTORY: u64 = 0o200000;
pub const O_NOFOLLOW: u64 = 0o400000;
const O_CLOEXEC: u64 = 0o2000000;
pub const O_PATH: u64 = 0o10000000;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

extern "C" {
    fn syscall(n: c_long, ...) -> c_long;
    fn mkdirat(dirfd: c_int, path: *const c_char, mode: c_uint) -> c_int;
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    fn renameat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char) -> c_int;
    fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: usize) -> isize;
    fn symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> c_int;
    fn linkat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char, flags: c_int) -> c_int;
    fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut u8, flags: c_int) -> c_int;
}

/// openat2(2) with the given resolve flags; the descriptor is close-on-exec and owned by the File.
fn openat2(dirfd: c_int, path: &str, flags: u64, mode: u64, resolve: u64) -> io::Result<File> {
    let p = cstr(path)?;
    let how = OpenHow { flags: flags | O_CLOEXEC, mode: if flags & O_CREAT != 0 { mode } else { 0 }, resolve };
    let fd = unsafe { syscall(SYS_OPENAT2, dirfd as c_long, p.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(unsafe { File::from_raw_fd(fd as RawFd) })
    }
}

/// True when the error means "this path leads out of the confining directory".
pub fn is_escape(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EXDEV) | Some(ELOOP))
}

/// The part of `path` below /workspace ("" for /workspace itself), or None for any other path.
/// `.` and empty components are dropped; `..` is refused outright (the host normalises paths, so a
/// `..` here is a bug or an attack, never a request to honour).
pub fn workspace_relative(path: &str) -> io::Result<Option<String>> {
    let parts = components(path)?;
    let root = WORKSPACE_ROOT.trim_start_matches('/');
    if parts.first().map(String::as_str) != Some(root) {
        return Ok(None);
    }
    Ok(Some(parts[1..].join("/")))
}

/// A path's components without empty and `.` ones; `..` is an error.
pub fn components(path: &str) -> io::Result<Vec<String>> {
    let parts: Vec<String> = path.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string).collect();
    if parts.iter().any(|c| c == "..") {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "path contains '..'"));
    }
    Ok(parts)
}

/// A directory that paths are resolved from: confined beneath it (for /workspace), or, for the
/// host's own runtime paths outside /workspace (/run/pyro-*, /var/tmp staging, /dev/urandom), the
/// plain filesystem root with ordinary link following.
pub struct Beneath {
    dir: File,
    resolve: u64,
}

impl Beneath {
    /// Opens the confining directory itself without following any symlink on the way to it, so a
    /// guest that replaces /workspace with a link to / does not widen the root.
    pub fn open(root: &str) -> io::Result<Beneath> {
        let dir = openat2(AT_FDCWD, root, O_PATH | O_DIRECTORY, 0, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)?;
        Ok(Beneath { dir, resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS })
    }

    pub fn workspace() -> io::Result<Beneath> {
        Beneath::open(WORKSPACE_ROOT)
    }

    /// The whole guest filesystem, unconfined (paths relative to /).
    pub fn system() -> io::Result<Beneath> {
        let dir = openat2(AT_FDCWD, "/", O_PATH | O_DIRECTORY, 0, 0)?;
        Ok(Beneath { dir, resolve: RESOLVE_NO_MAGICLINKS })
    }

    /// A directory inside this root (already opened beneath it) as a new, tighter root.
    pub fn narrowed(dir: File) -> Beneath {
        Beneath { dir, resolve: RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS }
    }

    /// Opens `rel` (relative, "" = the root) beneath the root. With O_NOFOLLOW the last component
    /// may be a symlink and is opened as itself (use O_PATH then); links before it are followed
    /// only while they stay beneath.
    pub fn open_at(&self, rel: &str, flags: u64, mode: u32) -> io::Result<File> {
        let path = if rel.is_empty() { "." } else { rel };
        openat2(self.dir.as_raw_fd(), path, flags, mode as u64, self.resolve)
    }

    /// The directory holding `rel`'s last component, and that component's name.
    pub fn parent_of<'a>(&self, rel: &'a str) -> io::Result<(File, &'a str)> {
        let (parent, name) = match rel.rfind('/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => ("", rel),
        };
        if name.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the path names the confining directory itself"));
        }
        Ok((self.open_at(parent, O_PATH | O_DIRECTORY, 0)?, name))
    }

    /// mkdir -p beneath the root: each component is created in a directory opened beneath.
    pub fn create_dirs(&self, rel: &str) -> io::Result<()> {
        let mut prefix = String::new();
        for part in rel.split('/').filter(|c| !c.is_empty()) {
            let parent = self.open_at(&prefix, O_PATH | O_DIRECTORY, 0)?;
            match mkdir_in(&parent, part, 0o755) {
                Err(e) if e.raw_os_error() == Some(EEXIST) => {}
                other => other?,
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
        }
        // The result must be a directory beneath the root (an existing link to elsewhere fails here).
        self.open_at(rel, O_PATH | O_DIRECTORY, 0).map(|_| ())
    }
}

/// Opens a direct child of `dir` by name, never following a symlink (the name is one component).
pub fn open_child(dir: &File, name: &str, flags: u64, mode: u32) -> io::Result<File> {
    openat2(dir.as_raw_fd(), name, flags | O_NOFOLLOW, mode as u64, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
}

pub fn mkdir_in(dir: &File, name: &str, mode: u32) -> io::Result<()> {
    let n = cstr(name)?;
    check(unsafe { mkdirat(dir.as_raw_fd(), n.as_ptr(), mode as c_uint) })
}

pub fn unlink_in(dir: &File, name: &str, is_dir: bool) -> io::Result<()> {
    let n = cstr(name)?;
    check(unsafe { unlinkat(dir.as_raw_fd(), n.as_ptr(), if is_dir { AT_REMOVEDIR } else { 0 }) })
}

pub fn rename_in(dir: &File, from: &str, to: &str) -> io::Result<()> {
    let (a, b) = (cstr(from)?, cstr(to)?);
    check(unsafe { renameat(dir.as_raw_fd(), a.as_ptr(), dir.as_raw_fd(), b.as_ptr()) })
}

pub fn symlink_in(dir: &File, name: &str, target: &str) -> io::Result<()> {
    let (t, n) = (cstr(target)?, cstr(name)?);
    check(unsafe { symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) })
}

/// A hard link `dir/name` to `source` (an O_PATH descriptor of a non-directory), via AT_EMPTY_PATH.
pub fn hardlink_in(source: &File, dir: &File, name: &str) -> io::Result<()> {
    const AT_EMPTY_PATH: c_int = 0x1000;
    let (empty, n) = (cstr("")?, cstr(name)?);
    check(unsafe { linkat(source.as_raw_fd(), empty.as_ptr(), dir.as_raw_fd(), n.as_ptr(), AT_EMPTY_PATH) })
}

/// What `stat_child` tells about a name, without opening it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChildStat {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mode: u32,
    pub size: u64,
}

impl ChildStat {
    pub fn is_file(&self) -> bool {
        self.mode & 0o170000 == 0o100000
    }
}

/// fstatat(dir, name, AT_SYMLINK_NOFOLLOW): the name itself (a link is a link), one component.
pub fn stat_child(dir: &File, name: &str) -> io::Result<ChildStat> {
    const AT_SYMLINK_NOFOLLOW: c_int = 0x100;
    if name.contains('/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a child name is one component"));
    }
    let n = cstr(name)?;
    // x86_64 `struct stat` (144 bytes): st_dev @0, st_ino @8, st_nlink @16, st_mode @24, st_size @48.
    let mut buf = [0u8; 144];
    check(unsafe { fstatat(dir.as_raw_fd(), n.as_ptr(), buf.as_mut_ptr(), AT_SYMLINK_NOFOLLOW) })?;
    let u64_at = |at: usize| u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap());
    Ok(ChildStat { dev: u64_at(0), ino: u64_at(8), nlink: u64_at(16), mode: u32::from_ne_bytes(buf[24..28].try_into().unwrap()), size: u64_at(48) })
}

/// The target of a symlink opened with O_PATH | O_NOFOLLOW.
pub fn link_target(link: &File) -> io::Result<String> {
    let empty = cstr("")?;
    let mut buf = vec![0u8; 4096];
    let n = unsafe { readlinkat(link.as_raw_fd(), empty.as_ptr(), buf.as_mut_ptr() as *mut c_char, buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The names in a directory opened for reading (not O_PATH), without "." and "..".
pub fn read_names(dir: &File) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = unsafe { syscall(SYS_GETDENTS64, dir.as_raw_fd() as c_long, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(names);
        }
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        let mut off = 0usize;
        while off + 19 <= n as usize {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 || off + reclen > n as usize {
                break;
            }
            let raw = &buf[off + 19..off + reclen];
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            let name = String::from_utf8_lossy(&raw[..end]).into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
            off += reclen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_workspace_paths() {
        assert_eq!(workspace_relative("/workspace").unwrap(), Some(String::new()));
        assert_eq!(workspace_relative("/workspace/").unwrap(), Some(String::new()));
        assert_eq!(workspace_relative("//workspace/./a//b").unwrap(), Some("a/b".to_string()));
        assert_eq!(workspace_relative("/workspacex/a").unwrap(), None);
        assert_eq!(workspace_relative("/run/pyro-secrets/A").unwrap(), None);
        assert!(workspace_relative("/workspace/../etc").is_err());
        assert!(workspace_relative("/tmp/../workspace/x").is_err());
    }

    /// Real kernel behaviour on the build machine: links out of the root are refused, links
    /// inside it followed, and the confined helpers never touch anything outside.
    #[test]
    fn refuses_links_out_of_the_root() {
        let base = std::env::temp_dir().join(format!("pyro-beneath-{}", std::process::id()));
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::fs::write(root.join("sub/file"), "f").unwrap();
        std::os::unix::fs::symlink("/", root.join("slash")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("up")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("rel")).unwrap();
        let b = Beneath::open(root.to_str().unwrap()).unwrap();
        for bad in ["slash/etc/passwd", "out/secret", "up/secret"] {
            let e = b.open_at(bad, O_RDONLY, 0).unwrap_err();
            assert!(is_escape(&e), "{}: {}", bad, e);
        }
        assert!(b.open_at("rel/file", O_RDONLY, 0).is_ok());
        assert!(is_escape(&b.create_dirs("out/newdir").unwrap_err()));
        assert!(!outside.join("newdir").exists());
        b.create_dirs("a/b/c").unwrap();
        assert!(root.join("a/b/c").is_dir());
        let dir = b.open_at("", O_RDONLY | O_DIRECTORY, 0).unwrap();
        let mut names = read_names(&dir).unwrap();
        names.sort();
        assert_eq!(names, vec!["a", "out", "rel", "slash", "sub", "up"]);
        let link = open_child(&dir, "slash", O_PATH, 0).unwrap();
        assert_eq!(link_target(&link).unwrap(), "/");
        // A root that is itself a symlink is refused rather than followed.
        std::os::unix::fs::symlink(&outside, base.join("linkroot")).unwrap();
        assert!(Beneath::open(base.join("linkroot").to_str().unwrap()).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
