//! Makes a restored copy of a saved VM a machine of its own. Every VM restored from one template (or
//! snapshot) wakes up with the same kernel RNG state, clock, hostname and machine-id; the host hands
//! each one fresh values right after the restore (op `identity.set`).

use crate::json::{obj, s, Json};
use crate::protocol::{OpError, Reply};
use crate::sys;
use std::fs;

/// Entropy the host must send: enough to reseed the CRNG (32 bytes) and bounded.
const MIN_ENTROPY: usize = 32;
const MAX_ENTROPY: usize = 512;

pub fn set(header: &Json, entropy: Vec<u8>) -> Result<Reply, OpError> {
    if entropy.len() < MIN_ENTROPY || entropy.len() > MAX_ENTROPY {
        return Err(OpError::bad_request(&format!("identity.set needs {}-{} bytes of entropy as its payload", MIN_ENTROPY, MAX_ENTROPY)));
    }
    let hostname = header.get("hostname").and_then(Json::as_str).ok_or_else(|| OpError::bad_request("hostname (string) is required"))?;
    if !valid_hostname(hostname) {
        return Err(OpError::bad_request("hostname must be 1-63 letters, digits and '-', not starting or ending with '-'"));
    }
    let machine_id = header.get("machine_id").and_then(Json::as_str).ok_or_else(|| OpError::bad_request("machine_id (string) is required"))?;
    if machine_id.len() != 32 || !machine_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(OpError::bad_request("machine_id must be 32 lowercase hex digits"));
    }
    let io = |what: &str, e: std::io::Error| OpError::new("io_error", &format!("{}: {}", what, e));
    // Credited and followed by a forced reseed: written alone, the bytes would only reach the CRNG
    // at its next scheduled reseed, and until then every clone would draw the same numbers.
    sys::add_entropy_and_reseed(&entropy).map_err(|e| io("reseeding the kernel RNG", e))?;
    if let Some(ms) = header.get("host_time_ms").and_then(Json::as_i64) {
        if ms > 0 {
            sys::set_realtime_ms(ms as u64).map_err(|e| io("setting the clock", e))?;
        }
    }
    sys::set_hostname(hostname).map_err(|e| io("sethostname", e))?;
    // Files on the root disk, best effort (a read-only root keeps its own): the kernel's values above are what count.
    let files_written = write_identity_file("/etc/hostname", &format!("{}\n", hostname)).is_ok() & write_identity_file("/etc/machine-id", &format!("{}\n", machine_id)).is_ok();
    Ok(Reply::header(obj(vec![("hostname", s(hostname)), ("files_written", Json::Bool(files_written))])))
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && !name.starts_with('-') && !name.ends_with('-') && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/**
 * Writes an identity file, never following a link at its name. An existing regular file is
 * overwritten in place: this runs first thing in every restored VM, and under TCG the first ext4
 * create and rename a VM makes cost ~50 ms of code translation (a write into an existing file a
 * fraction of that). Both files exist in every image (the template wrote them). Unlike a rename, a
 * reader at that instant (a process restored with a snapshot) could see a mix of old and new
 * bytes; nothing pyro runs reads them, and the kernel's values are set first. Anything but a
 * regular file at the name goes through a temp file and a rename.
 */
fn write_identity_file(path: &str, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    const O_NOFOLLOW: i32 = 0o400000;
    // Non-blocking: a FIFO put at the name must not hang the agent (the open fails, the rename replaces it).
    const O_NONBLOCK: i32 = 0o4000;
    match fs::OpenOptions::new().write(true).custom_flags(O_NOFOLLOW | O_NONBLOCK).open(path) {
        Ok(mut file) if file.metadata()?.is_file() => {
            file.write_all(content.as_bytes())?;
            // Shorter than what was there: cut the rest (the content's length is all that changes here).
            if file.metadata()?.len() != content.len() as u64 {
                file.set_len(content.len() as u64)?;
            }
            Ok(())
        }
        _ => replace_file(path, content),
    }
}

/// Replaces a file whole (a reader sees the old or the new content), never following a link at its name.
fn replace_file(path: &str, content: &str) -> std::io::Result<()> {
    let tmp = format!("{}.pyro-new", path);
    let _ = fs::remove_file(&tmp);
    fs::write(&tmp, content)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::{valid_hostname, write_identity_file};
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("pyro-identity-{}-{}", name, std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn an_existing_file_is_overwritten_in_place() {
        let dir = scratch("in-place");
        let file = dir.join("machine-id");
        fs::write(&file, "pyro-template-value-that-is-long\n").unwrap();
        let inode = fs::metadata(&file).unwrap().ino();
        write_identity_file(file.to_str().unwrap(), "short\n").unwrap();
        // Same inode (no create, no rename: the cheap path), and nothing of the longer old value left.
        assert_eq!(fs::metadata(&file).unwrap().ino(), inode);
        assert_eq!(fs::read_to_string(&file).unwrap(), "short\n");
        write_identity_file(file.to_str().unwrap(), "a longer value than before\n").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "a longer value than before\n");
        assert_eq!(fs::metadata(&file).unwrap().ino(), inode);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_link_or_fifo_at_the_name_is_replaced_not_written_through() {
        let dir = scratch("links");
        let target = dir.join("target");
        fs::write(&target, "untouched\n").unwrap();
        let link = dir.join("hostname");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_identity_file(link.to_str().unwrap(), "ws-new\n").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "untouched\n");
        assert!(fs::symlink_metadata(&link).unwrap().is_file());
        assert_eq!(fs::read_to_string(&link).unwrap(), "ws-new\n");
        // A FIFO with no reader: opening it for writing must not block the agent.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { mkfifo(c.as_ptr(), 0o600) }, 0);
        write_identity_file(fifo.to_str().unwrap(), "ws-new\n").unwrap();
        assert!(fs::symlink_metadata(&fifo).unwrap().is_file());
        // A missing file is created.
        write_identity_file(dir.join("absent").to_str().unwrap(), "x\n").unwrap();
        assert_eq!(fs::read_to_string(dir.join("absent")).unwrap(), "x\n");
        fs::remove_dir_all(&dir).unwrap();
    }

    extern "C" {
        fn mkfifo(path: *const std::os::raw::c_char, mode: u32) -> i32;
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("ws-abc123"));
        assert!(!valid_hostname(""));
        assert!(!valid_hostname("-a"));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname(&"a".repeat(64)));
    }
}
