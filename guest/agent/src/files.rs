//! File operations, so the host never has to quote paths or contents through a shell.

use crate::beneath::{self, Beneath, O_APPEND, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_PATH, O_RDONLY, O_WRONLY, WORKSPACE_ROOT};
use crate::json::{obj, s, Json};
use crate::protocol::{OpError, Reply};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

const O_NONBLOCK: u64 = 0o4000;

const DEFAULT_MAX_READ: i64 = 1 << 20;
const DEFAULT_MAX_ENTRIES: i64 = 10_000;

fn path_arg<'a>(header: &'a Json) -> Result<&'a str, OpError> {
    let p = header.get("path").and_then(Json::as_str).ok_or_else(|| OpError::bad_request("path (string) is required"))?;
    if !p.starts_with('/') {
        return Err(OpError::bad_request("path must be absolute"));
    }
    Ok(p)
}

/// Where a request's path is resolved: a /workspace path beneath /workspace (symlinks that leave it
/// are refused), anything else — the host's own runtime paths — from the guest's root.
pub struct Target {
    pub root: Beneath,
    /// The path relative to `root` ("" for the root itself).
    pub rel: String,
    /// The path as the host sent it, for messages.
    pub shown: String,
}

pub fn target(path: &str) -> Result<Target, OpError> {
    let shown = path.to_string();
    match beneath::workspace_relative(path) {
        Ok(Some(rel)) => {
            let root = Beneath::workspace().map_err(|e| OpError::new("io_error", &format!("{}: {}", WORKSPACE_ROOT, e)))?;
            Ok(Target { root, rel, shown })
        }
        Ok(None) => {
            let rel = beneath::components(path).map_err(|e| OpError::bad_request(&e.to_string()))?.join("/");
            let root = Beneath::system().map_err(|e| OpError::new("io_error", &format!("/: {}", e)))?;
            Ok(Target { root, rel, shown })
        }
        Err(e) => Err(OpError::bad_request(&format!("{}: {}", path, e))),
    }
}

fn header_target(header: &Json) -> Result<Target, OpError> {
    target(path_arg(header)?)
}

/// Flushes the filesystem holding the directory `path` (syncfs), not every one: after a push into
/// /workspace, flushing the root disk too cost a second flush of the host's file under it. Where
/// `path` does not open as a directory, every filesystem is flushed, as a plain `sync` does.
pub fn sync_filesystem_of(path: &str) {
    let synced = target(path).ok().and_then(|t| t.root.open_at(&t.rel, O_RDONLY | O_DIRECTORY, 0).ok()).map(|dir| crate::sys::sync_filesystem(&dir));
    if !matches!(synced, Some(Ok(()))) {
        crate::sys::sync_all();
    }
}

pub fn io_error(path: &str, e: std::io::Error) -> OpError {
    if beneath::is_escape(&e) && e.raw_os_error() == Some(18) {
        return OpError::new(
            "outside_workspace",
            &format!("{} leads outside {} through a symbolic link (or '..'); file tools stay inside {}", path, WORKSPACE_ROOT, WORKSPACE_ROOT),
        );
    }
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => "not_found",
        std::io::ErrorKind::PermissionDenied => "permission_denied",
        std::io::ErrorKind::AlreadyExists => "already_exists",
        _ => match e.raw_os_error() {
            Some(21) => "is_a_directory",
            Some(20) => "not_a_directory",
            Some(28) => "no_space",
            Some(40) => "too_many_links",
            _ => "io_error",
        },
    };
    OpError::new(code, &format!("{}: {}", path, e))
}

fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "char_device"
    } else if ft.is_block_device() {
        "block_device"
    } else {
        "other"
    }
}

fn describe(path: &str, meta: &fs::Metadata, link: Option<&File>) -> Json {
    let ft = meta.file_type();
    let mut pairs = vec![
        ("path", s(path)),
        ("type", s(kind_of(&ft))),
        ("size", Json::Int(meta.len() as i64)),
        ("mode", Json::Int((meta.permissions().mode() & 0o7777) as i64)),
        ("mtime_ms", Json::Int(meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000)),
    ];
    if ft.is_symlink() {
        let target = link.and_then(|f| beneath::link_target(f).ok()).unwrap_or_default();
        pairs.push(("target", Json::Str(target)));
    }
    obj(pairs)
}

pub fn stat(header: &Json) -> Result<Reply, OpError> {
    let t = header_target(header)?;
    let node = t.root.open_at(&t.rel, O_PATH | O_NOFOLLOW, 0).map_err(|e| io_error(&t.shown, e))?;
    let meta = node.metadata().map_err(|e| io_error(&t.shown, e))?;
    Ok(Reply::header(describe(&t.shown, &meta, Some(&node))))
}

pub fn read(header: &Json) -> Result<Reply, OpError> {
    let t = header_target(header)?;
    let path = t.shown.as_str();
    let offset = header.get("offset").and_then(Json::as_i64).unwrap_or(0).max(0) as u64;
    let max = header.get("max_bytes").and_then(Json::as_i64).unwrap_or(DEFAULT_MAX_READ).max(0) as u64;
    // O_NONBLOCK: a FIFO planted in /workspace must not hang the request.
    let mut f = t.root.open_at(&t.rel, O_RDONLY | O_NONBLOCK, 0).map_err(|e| io_error(path, e))?;
    let meta = f.metadata().map_err(|e| io_error(path, e))?;
    if meta.is_dir() {
        return Err(OpError::new("is_a_directory", &format!("{} is a directory", path)));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| io_error(path, e))?;
    let mut data = Vec::new();
    f.take(max).read_to_end(&mut data).map_err(|e| io_error(path, e))?;
    let size = meta.len();
    let truncated = offset + (data.len() as u64) < size;
    Ok(Reply {
        header: obj(vec![
            ("size", Json::Int(size as i64)),
            ("offset", Json::Int(offset as i64)),
            ("truncated", Json::Bool(truncated)),
        ]),
        payload: data,
    })
}

/// Replaces `dir/name` with `data` through a temp file and rename, so a reader never sees half a
/// file; a symlink at `name` is replaced, never written through.
pub fn replace_file(dir: &File, name: &str, data: &mut dyn Read, mode: u32) -> std::io::Result<u64> {
    if let Ok(existing) = beneath::open_child(dir, name, O_PATH, 0) {
        if existing.metadata()?.is_dir() {
            return Err(std::io::Error::from_raw_os_error(21));
        }
    }
    // Not derived from `name`: a 255-byte name plus a suffix would exceed NAME_MAX.
    let tmp = format!(".pyro-{:x}.tmp", std::process::id() as u64 ^ now_nanos());
    let result = (|| {
        let mut f = beneath::open_child(dir, &tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600)?;
        let n = std::io::copy(data, &mut f)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        beneath::rename_in(dir, &tmp, name)?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = beneath::unlink_in(dir, &tmp, false);
    }
    result
}

pub fn write(header: &Json, data: Vec<u8>) -> Result<Reply, OpError> {
    let t = header_target(header)?;
    let path = t.shown.as_str();
    let mode = header.get("mode").and_then(Json::as_i64).unwrap_or(0o644) as u32 & 0o7777;
    let append = header.get("append").and_then(Json::as_bool).unwrap_or(false);
    if t.rel.is_empty() {
        return Err(OpError::bad_request(&format!("cannot write to {}", path)));
    }
    let parent = t.rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    if header.get("mkdirs").and_then(Json::as_bool).unwrap_or(true) {
        t.root.create_dirs(parent).map_err(|e| io_error(path, e))?;
    }
    if append {
        // Appending continues a file, never creates one: a chunk the host sent before it died can
        // still arrive after recovery removed the half-written file, and must not bring it back.
        let mut f = t.root.open_at(&t.rel, O_WRONLY | O_APPEND, mode).map_err(|e| io_error(path, e))?;
        f.write_all(&data).map_err(|e| io_error(path, e))?;
    } else {
        let (dir, name) = t.root.parent_of(&t.rel).map_err(|e| io_error(path, e))?;
        replace_file(&dir, name, &mut data.as_slice(), mode).map_err(|e| match e.raw_os_error() {
            Some(21) => OpError::new("is_a_directory", &format!("{} is a directory", path)),
            _ => io_error(path, e),
        })?;
    }
    Ok(Reply::header(obj(vec![("path", s(path)), ("bytes", Json::Int(data.len() as i64))])))
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub fn list(header: &Json) -> Result<Reply, OpError> {
    let t = header_target(header)?;
    let path = t.shown.as_str();
    let recursive = header.get("recursive").and_then(Json::as_bool).unwrap_or(false);
    let max = header.get("max_entries").and_then(Json::as_i64).unwrap_or(DEFAULT_MAX_ENTRIES).max(1) as usize;
    let top = t.root.open_at(&t.rel, O_RDONLY | O_DIRECTORY, 0).map_err(|e| match e.raw_os_error() {
        Some(20) => OpError::new("not_a_directory", &format!("{} is not a directory", path)),
        _ => io_error(path, e),
    })?;
    let mut entries = Vec::new();
    let mut truncated = false;
    // Depth first by directory descriptor: children are opened by name with O_NOFOLLOW, so a
    // listing never walks through a link.
    let mut stack = vec![(top, path.trim_end_matches('/').to_string())];
    while let Some((dir, dir_path)) = stack.pop() {
        let mut names = match beneath::read_names(&dir) {
            Ok(names) => names,
            Err(_) => continue, // an unreadable subdirectory does not fail the listing
        };
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            if entries.len() >= max {
                truncated = true;
                break;
            }
            let full = format!("{}/{}", dir_path, name);
            let node = match beneath::open_child(&dir, &name, O_PATH, 0) {
                Ok(node) => node,
                Err(_) => continue, // vanished meanwhile
            };
            if let Ok(m) = node.metadata() {
                if recursive && m.is_dir() {
                    if let Ok(sub) = beneath::open_child(&dir, &name, O_RDONLY | O_DIRECTORY, 0) {
                        subdirs.push((sub, full.clone()));
                    }
                }
                entries.push(describe(&full, &m, Some(&node)));
            }
        }
        if truncated {
            break;
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(Reply::header(obj(vec![("entries", Json::Array(entries)), ("truncated", Json::Bool(truncated))])))
}

pub fn mkdir(header: &Json) -> Result<Reply, OpError> {
    let t = header_target(header)?;
    t.root.create_dirs(&t.rel).map_err(|e| io_error(&t.shown, e))?;
    Ok(Reply::header(obj(vec![("path", s(&t.shown))])))
}

/// Removes `dir/name` and, for a directory, everything in it, by descriptor (links are unlinked,
/// never followed).
pub fn remove_tree(dir: &File, name: &str) -> std::io::Result<()> {
    let node = beneath::open_child(dir, name, O_PATH, 0)?;
    if !node.metadata()?.is_dir() {
        return beneath::unlink_in(dir, name, false);
    }
    let inner = beneath::open_child(dir, name, O_RDONLY | O_DIRECTORY, 0)?;
    for child in beneath::read_names(&inner)? {
        remove_tree(&inner, &child)?;
    }
    beneath::unlink_in(dir, name, true)
}

pub fn remove(header: &Json) -> Result<Reply, OpError> {
    let t = header_target(header)?;
    let path = t.shown.as_str();
    let recursive = header.get("recursive").and_then(Json::as_bool).unwrap_or(false);
    let (dir, name) = t.root.parent_of(&t.rel).map_err(|e| io_error(path, e))?;
    let node = beneath::open_child(&dir, name, O_PATH, 0).map_err(|e| io_error(path, e))?;
    let is_dir = node.metadata().map_err(|e| io_error(path, e))?.is_dir();
    let result = if is_dir && recursive { remove_tree(&dir, name) } else { beneath::unlink_in(&dir, name, is_dir) };
    result.map_err(|e| io_error(path, e))?;
    Ok(Reply::header(obj(vec![("path", s(path))])))
}
