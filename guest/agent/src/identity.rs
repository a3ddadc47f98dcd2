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
    let files_written = replace_file("/etc/hostname", &format!("{}\n", hostname)).is_ok() & replace_file("/etc/machine-id", &format!("{}\n", machine_id)).is_ok();
    Ok(Reply::header(obj(vec![("hostname", s(hostname)), ("files_written", Json::Bool(files_written))])))
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && !name.starts_with('-') && !name.ends_with('-') && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
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
    use super::valid_hostname;

    #[test]
    fn hostnames() {
        assert!(valid_hostname("ws-abc123"));
        assert!(!valid_hostname(""));
        assert!(!valid_hostname("-a"));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname(&"a".repeat(64)));
    }
}
