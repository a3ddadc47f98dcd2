//! `fs.freeze` / `fs.thaw`: hold /workspace frozen (FIFREEZE) while the host copies its disk.
//!
//! ext4's freeze flushes every write and checkpoints the journal, so the disk the host reads is a
//! clean filesystem at one moment, without pausing the VM. A frozen filesystem blocks every writer
//! in the guest, so a freeze must never outlive the host that asked for it: it is released by
//! `fs.thaw`, when the host's connection closes (the port reads EOF), when a new host session
//! starts, after at most MAX_HOLD_MS whatever happens, and at agent start-up.

use crate::json::{obj, Json};
use crate::protocol::{OpError, Reply};
use crate::workspace_disk::{mounted_at, MOUNT_POINT};
use std::os::unix::io::AsRawFd;
use std::sync::Mutex;
use std::time::Duration;

/// The longest a freeze is held, whatever the host asks or does (the host reads it from the reply).
pub const MAX_HOLD_MS: i64 = 10_000;

/// The freeze this agent holds: /workspace opened (the ioctls' handle) and the token that names it.
struct Held {
    dir: std::fs::File,
    token: i64,
}

static HELD: Mutex<Option<Held>> = Mutex::new(None);
static LAST_TOKEN: Mutex<i64> = Mutex::new(0);

/// `fs.freeze` { hold_ms? }: freezes /workspace for at most `hold_ms` (capped at MAX_HOLD_MS).
/// Replies { frozen: true, token, hold_ms }; `busy` if it is frozen already (by pyro or by the guest).
pub fn freeze(header: &Json) -> Result<Reply, OpError> {
    let hold_ms = header.get("hold_ms").and_then(Json::as_i64).unwrap_or(MAX_HOLD_MS).clamp(1, MAX_HOLD_MS);
    let mut held = HELD.lock().unwrap();
    if held.is_some() {
        return Err(OpError::new("busy", &format!("{} is already frozen by an earlier fs.freeze", MOUNT_POINT)));
    }
    if !mounted_at(MOUNT_POINT) {
        return Err(OpError::new("not_found", &format!("nothing is mounted on {}", MOUNT_POINT)));
    }
    let dir = std::fs::File::open(MOUNT_POINT).map_err(|e| crate::files::io_error(MOUNT_POINT, e))?;
    crate::sys::freeze_fs(dir.as_raw_fd()).map_err(|e| match e.raw_os_error() {
        Some(16) => OpError::new("busy", &format!("{} is already frozen (not by pyro)", MOUNT_POINT)),
        _ => OpError::new("io_error", &format!("freezing {}: {}", MOUNT_POINT, e)),
    })?;
    let token = {
        let mut last = LAST_TOKEN.lock().unwrap();
        *last += 1;
        *last
    };
    *held = Some(Held { dir, token });
    drop(held);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(hold_ms as u64));
        if release(Some(token)) {
            eprintln!("pyro-agent: {} thawed after {} ms: its freeze was not released in time", MOUNT_POINT, hold_ms);
        }
    });
    Ok(Reply::header(obj(vec![("frozen", Json::Bool(true)), ("token", Json::Int(token)), ("hold_ms", Json::Int(hold_ms))])))
}

/// `fs.thaw` { token }: thaws the freeze `token` names. `held: true` iff it was still in force, i.e.
/// the disk did not change between the freeze and now.
pub fn thaw(header: &Json) -> Result<Reply, OpError> {
    let token = header.get("token").and_then(Json::as_i64).ok_or_else(|| OpError::bad_request("token (integer) is required"))?;
    Ok(Reply::header(obj(vec![("held", Json::Bool(release(Some(token))))])))
}

/// Thaws the freeze this agent holds (only the one `token` names, if given). True if one was thawed.
pub fn release(token: Option<i64>) -> bool {
    let mut held = HELD.lock().unwrap();
    match held.as_ref() {
        Some(h) if token.map_or(true, |t| t == h.token) => {
            if let Err(e) = crate::sys::thaw_fs(h.dir.as_raw_fd()) {
                eprintln!("pyro-agent: thawing {}: {}", MOUNT_POINT, e);
            }
            *held = None;
            true
        }
        _ => false,
    }
}

/// The host that asked for a freeze is gone (its connection closed, or a new host session began).
pub fn release_for_departed_host() {
    if release(None) {
        eprintln!("pyro-agent: {} thawed: the host that froze it went away", MOUNT_POINT);
    }
}

/// At start-up: a freeze no agent holds would block the guest's writers for good, so thaw whatever
/// is frozen on /workspace (EINVAL, the usual answer, means it was not).
pub fn thaw_left_behind() {
    if !mounted_at(MOUNT_POINT) {
        return;
    }
    if let Ok(dir) = std::fs::File::open(MOUNT_POINT) {
        if crate::sys::thaw_fs(dir.as_raw_fd()).is_ok() {
            eprintln!("pyro-agent: {} was left frozen; thawed", MOUNT_POINT);
        }
    }
}
