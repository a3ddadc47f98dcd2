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
pub const MOUNT_POINT: &str = "/workspace";
const MS_NOATIME: u64 = 1024;

/**
 * The /workspace disk's device, looked up once when the agent starts. Reading a virtio disk's serial
 * is a request to the VMM, and under TCG the code that makes it is translated afresh in every
 * restored VM: left to the mount, it cost each restore ~15 ms. A restored VM has the devices of the
 * VM that saved it, so the answer found before the save stays right.
 */
static DISK: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Finds the disk now (agent start-up), for the mount to use later.
pub fn remember_disk() {
    let _ = DISK.set(find_disk());
}

/// The remembered disk, or a fresh look (it was not there at start-up).
fn workspace_disk() -> Option<String> {
    DISK.get().cloned().flatten().or_else(find_disk)
}

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

/// Whether a filesystem other than the root's is mounted on `target` (a directory under /): its
/// device differs. Two stats, not a read of the mount table (whose code costs a restored VM ~10 ms).
pub fn mounted_at(target: &str) -> bool {
    match (fs::symlink_metadata(target), fs::symlink_metadata("/")) {
        (Ok(at), Ok(root)) => at.dev() != root.dev(),
        _ => false,
    }
}

/// Mounts the workspace disk on /workspace unless something is mounted there already (a guest
/// restored from a snapshot of a running workspace). Idempotent.
pub fn mount(_header: &Json) -> Result<Reply, OpError> {
    if mounted_at(MOUNT_POINT) {
        return Ok(Reply::header(obj(vec![("mounted", Json::Bool(true)), ("already", Json::Bool(true))])));
    }
    let device = workspace_disk().ok_or_else(|| OpError::new("not_found", &format!("no disk with serial {} is attached", DISK_SERIAL)))?;
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
    walk_reply(header, None)
}

/**
 * `tree.changes` { path, since_ns (decimal string), max_bytes }: the same walk and records as
 * `tree.manifest`, but only those the host needs to rebuild the whole manifest from the baseline it
 * holds: every entry whose ctime is after `since_ns` (a change of contents, mode, links or name
 * sets it), every child of the root and of a directory whose ctime is after it (so additions,
 * removals and renames in it show), and the directories above each of those (parents first, as
 * in a manifest). Every entry is still stat'ed; what is saved is sending and parsing the rest.
 */
pub fn changes(header: &Json) -> Result<Reply, OpError> {
    let since = header.get("since_ns").and_then(Json::as_str).and_then(|t| t.parse::<i128>().ok()).ok_or_else(|| OpError::bad_request("since_ns (decimal string) is required"))?;
    walk_reply(header, Some(since))
}

/// A directory met on the walk: its record, whether it was sent, and the directory above it.
struct WalkedDir {
    rel: Vec<u8>,
    record: Vec<u8>,
    sent: bool,
    parent: usize,
    /// Its ctime is after `since` (or it is the root): all its children are sent.
    whole: bool,
}

fn ctime_ns(meta: &fs::Metadata) -> i128 {
    meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128
}

fn walk_reply(header: &Json, since: Option<i128>) -> Result<Reply, OpError> {
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
    // Index 0 is the root: never sent, its children always are.
    let mut dirs = vec![WalkedDir { rel: Vec::new(), record: Vec::new(), sent: true, parent: 0, whole: true }];
    // Depth first, names sorted: the same tree gives the same bytes.
    let mut stack: Vec<usize> = vec![0];
    'walk: while let Some(at) = stack.pop() {
        let rel = std::mem::take(&mut dirs[at].rel);
        let dir = if rel.is_empty() { std::path::PathBuf::from(root) } else { std::path::Path::new(root).join(std::ffi::OsStr::from_bytes(&rel)) };
        let mut names: Vec<Vec<u8>> = match fs::read_dir(&dir) {
            Ok(it) => it.filter_map(|e| e.ok()).map(|e| e.file_name().as_bytes().to_vec()).collect(),
            Err(_) => continue, // vanished or unreadable while walking: its parent's record stands
        };
        names.sort();
        let whole = dirs[at].whole;
        let mut subdirs = Vec::new();
        for name in names {
            let child_rel = if rel.is_empty() { name.clone() } else { [rel.as_slice(), b"/", name.as_slice()].concat() };
            let path = dir.join(std::ffi::OsStr::from_bytes(&name));
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(_) => continue,
            };
            let target = if meta.file_type().is_symlink() { fs::read_link(&path).map(|t| t.as_os_str().as_bytes().to_vec()).unwrap_or_default() } else { Vec::new() };
            let mut record = Vec::new();
            push_record(&mut record, &child_rel, &meta, &target);
            let changed = since.map_or(true, |t| ctime_ns(&meta) > t);
            let send = whole || changed;
            if send {
                // The directories above it first, those not sent yet, outermost first.
                let mut chain = Vec::new();
                let mut up = at;
                while !dirs[up].sent {
                    chain.push(up);
                    up = dirs[up].parent;
                }
                let pending: usize = chain.iter().map(|d| dirs[*d].record.len()).sum();
                if out.len() + pending + record.len() > max_bytes {
                    truncated = true;
                    break 'walk;
                }
                for d in chain.into_iter().rev() {
                    out.extend_from_slice(&dirs[d].record);
                    dirs[d].sent = true;
                    entries += 1;
                }
                out.extend_from_slice(&record);
                entries += 1;
            }
            if meta.is_dir() && meta.dev() == device {
                dirs.push(WalkedDir { rel: child_rel, record: if send { Vec::new() } else { record }, sent: send, parent: at, whole: changed });
                subdirs.push(dirs.len() - 1);
            }
        }
        // Reversed onto the stack so the smallest name is walked first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(Reply { header: obj(vec![("entries", Json::Int(entries)), ("truncated", Json::Bool(truncated))]), payload: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths_of(reply: &Reply) -> Vec<String> {
        let mut out = Vec::new();
        let fields: Vec<&[u8]> = reply.payload.split(|b| *b == 0).collect();
        for record in fields.chunks(3) {
            if record.len() == 3 {
                out.push(String::from_utf8_lossy(record[1]).into_owned());
            }
        }
        out
    }

    fn ask(op: fn(&Json) -> Result<Reply, OpError>, root: &std::path::Path, since: Option<i128>) -> Vec<String> {
        let mut fields = vec![("path", s(root.to_str().unwrap()))];
        if let Some(t) = since {
            fields.push(("since_ns", s(&t.to_string())));
        }
        paths_of(&op(&obj(fields)).unwrap())
    }

    #[test]
    fn a_mount_point_is_told_by_its_device() {
        // /proc is a mount of its own everywhere this runs; a fresh directory on / is not (unless / is not the temp fs).
        assert!(mounted_at("/proc"));
        let plain = std::env::temp_dir().join(format!("pyro-mounted-{}", std::process::id()));
        fs::create_dir_all(&plain).unwrap();
        let same_fs = fs::metadata(&plain).unwrap().dev() == fs::metadata("/").unwrap().dev();
        assert_eq!(mounted_at(plain.to_str().unwrap()), !same_fs);
        assert!(!mounted_at("/nonexistent-pyro-mount-point"));
        fs::remove_dir_all(&plain).unwrap();
    }

    #[test]
    fn changes_send_changed_entries_their_directories_and_changed_directories_children() {
        let base = std::env::temp_dir().join(format!("pyro-changes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        for d in ["a/deep/er", "b/c", "quiet/x"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        for f in ["a/deep/er/f", "a/deep/g", "b/c/h", "b/i", "quiet/x/y", "top"] {
            fs::write(base.join(f), "v1").unwrap();
        }
        let all = ask(manifest, &base, None);
        let since = all.iter().map(|p| ctime_ns(&fs::symlink_metadata(base.join(p)).unwrap())).max().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        fs::write(base.join("a/deep/er/f"), "v2 longer").unwrap(); // a changed file deep down
        fs::remove_file(base.join("b/i")).unwrap(); // b changes: all its children go
        let changed = ask(changes, &base, Some(since));
        // Root's children always; a/deep/er/f with the directories above it; b's children.
        assert_eq!(changed, vec!["a", "b", "quiet", "top", "a/deep", "a/deep/er", "a/deep/er/f", "b/c"]);
        // With no change at all, only the root's children.
        assert_eq!(ask(changes, &base, Some(i128::MAX)), vec!["a", "b", "quiet", "top"]);
        // Since the beginning of time, everything: the same as the manifest.
        assert_eq!(ask(changes, &base, Some(0)), ask(manifest, &base, None));
        assert!(changes(&obj(vec![("path", s(base.to_str().unwrap()))])).is_err(), "since_ns is required");
        fs::remove_dir_all(&base).unwrap();
    }
}
