//! /workspace as its own disk: found by its virtio serial, mounted on the host's request, and
//! walked into a metadata manifest the host diffs against the seed image's.
//!
//! The mount is an op (not done at boot) because boot templates are saved before any workspace
//! exists: the template guest probed a placeholder disk of the same size, and a restored copy gets
//! the workspace's real disk under the same device.

use crate::json::{obj, s, Json};
use crate::protocol::{OpError, Reply};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

/// The virtio-blk serial the host gives the /workspace disk (`-device virtio-blk-device,serial=`).
pub const DISK_SERIAL: &str = "pyro-workspace";
const MOUNT_POINT: &str = "/workspace";
const MS_NOATIME: u64 = 1024;

/// The block device (e.g. /dev/vdb) whose virtio serial is DISK_SERIAL.
fn find_disk() -> Option<String> {
    let entries = fs::read_dir("/sys/block").ok()?;
    for entry in entries.filter_map(|e| e.ok()) {
        let serial = fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
        if serial.trim() == DISK_SERIAL {
            return Some(format!("/dev/{}", entry.file_name().to_string_lossy()));
        }
    }
    None
}

fn mounted_at(target: &str) -> bool {
    fs::read_to_string("/proc/self/mounts").unwrap_or_default().lines().any(|l| l.split_whitespace().nth(1) == Some(target))
}

/// Mounts the workspace disk on /workspace unless something is mounted there already (a guest
/// restored from a snapshot of a running workspace). Idempotent.
pub fn mount(_header: &Json) -> Result<Reply, OpError> {
    if mounted_at(MOUNT_POINT) {
        return Ok(Reply::header(obj(vec![("mounted", Json::Bool(true)), ("already", Json::Bool(true))])));
    }
    let device = find_disk().ok_or_else(|| OpError::new("not_found", &format!("no disk with serial {} is attached", DISK_SERIAL)))?;
    // The kernel cached what it read while probing the template's placeholder disk: drop it, or the
    // mount would see the placeholder's zeros instead of this disk's superblock.
    crate::sys::flush_block_buffers(&device).map_err(|e| OpError::new("io_error", &format!("flushing {}: {}", device, e)))?;
    let _ = fs::create_dir_all(MOUNT_POINT);
    // noinit_itable: the host built the image with lazily initialised inode tables; zeroing them
    // now would write tens of MiB into the workspace's overlay for nothing.
    crate::sys::mount_fs(&device, MOUNT_POINT, "ext4", MS_NOATIME as _, "noinit_itable").map_err(|e| OpError::new("io_error", &format!("mounting {} on {}: {}", device, MOUNT_POINT, e)))?;
    Ok(Reply::header(obj(vec![("mounted", Json::Bool(true)), ("already", Json::Bool(false)), ("device", s(&device))])))
}

/// One manifest record: `type mode size mtime_ns ctime_ns ino nlink\0path\0target\0` (path relative
/// to the walked root; target empty unless a symlink). Types: f file, d directory, l symlink, o other.
/// The host parses it in src/workspaces/tree-manifest.ts.
fn push_record(out: &mut Vec<u8>, rel: &[u8], meta: &fs::Metadata, target: &[u8]) {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        'f'
    } else if ft.is_dir() {
        'd'
    } else if ft.is_symlink() {
        'l'
    } else {
        'o'
    };
    let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
    let ctime_ns = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
    out.extend_from_slice(format!("{} {:o} {} {} {} {} {}\0", kind, meta.mode() & 0o7777, meta.size(), mtime_ns, ctime_ns, meta.ino(), meta.nlink()).as_bytes());
    out.extend_from_slice(rel);
    out.push(0);
    out.extend_from_slice(target);
    out.push(0);
}

/// Walks a directory without following symlinks or leaving its filesystem, and returns one record
/// per entry (the root itself excluded) as the payload. Stops at `max_bytes` of records (`truncated`).
pub fn manifest(header: &Json) -> Result<Reply, OpError> {
    let root = header.get("path").and_then(Json::as_str).ok_or_else(|| OpError::bad_request("path (string) is required"))?;
    let max_bytes = header.get("max_bytes").and_then(Json::as_i64).unwrap_or(64 << 20).max(0) as usize;
    let top = fs::symlink_metadata(root).map_err(|e| crate::files::io_error(root, e))?;
    if !top.is_dir() {
        return Err(OpError::new("not_a_directory", &format!("{} is not a directory", root)));
    }
    let device = top.dev();
    let mut out = Vec::new();
    let mut entries = 0i64;
    let mut truncated = false;
    // Depth first, names sorted: the same tree gives the same bytes.
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    'walk: while let Some(rel) = stack.pop() {
        let dir = if rel.is_empty() { std::path::PathBuf::from(root) } else { std::path::Path::new(root).join(std::ffi::OsStr::from_bytes(&rel)) };
        let mut names: Vec<Vec<u8>> = match fs::read_dir(&dir) {
            Ok(it) => it.filter_map(|e| e.ok()).map(|e| e.file_name().as_bytes().to_vec()).collect(),
            Err(_) => continue, // vanished or unreadable while walking: its parent's record stands
        };
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let child_rel = if rel.is_empty() { name.clone() } else { [rel.as_slice(), b"/", name.as_slice()].concat() };
            let path = dir.join(std::ffi::OsStr::from_bytes(&name));
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let target = if meta.file_type().is_symlink() { fs::read_link(&path).map(|t| t.as_os_str().as_bytes().to_vec()).unwrap_or_default() } else { Vec::new() };
            if out.len() + child_rel.len() + target.len() + 96 > max_bytes {
                truncated = true;
                break 'walk;
            }
            push_record(&mut out, &child_rel, &meta, &target);
            entries += 1;
            if meta.is_dir() && meta.dev() == device {
                subdirs.push(child_rel);
            }
        }
        // Reversed onto the stack so the smallest name is walked first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(Reply { header: obj(vec![("entries", Json::Int(entries)), ("truncated", Json::Bool(truncated))]), payload: out })
}
