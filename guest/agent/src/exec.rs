//! The `exec` operation: run one command with a timeout, stdin, and bounded stdout/stderr.

use crate::capture::Capture;
use crate::json::{obj, Json};
use crate::command::{CommandSpec, Resolved};
use crate::process::{ChildIo, Registry, SpawnRequest};
use crate::protocol::{OpError, Reply};
use crate::sys;
use std::io::{Read, Write};
use std::os::unix::io::FromRawFd;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const DEFAULT_MAX_OUTPUT: i64 = 1 << 20;
/// After the command exits, how long background children may keep its pipes open before we kill them.
const PIPE_GRACE: Duration = Duration::from_millis(300);

pub fn exec(registry: &Registry, header: &Json, stdin: Vec<u8>) -> Result<Reply, OpError> {
    let timeout_ms = header.get("timeout_ms").and_then(Json::as_i64).filter(|t| *t > 0);
    let max_output = header.get("max_output_bytes").and_then(Json::as_i64).unwrap_or(DEFAULT_MAX_OUTPUT).max(0) as usize;
    let started = Instant::now();
    let cmd = match CommandSpec::from_header(header)? {
        Resolved::Ready(cmd) => cmd,
        Resolved::NotFound(name) => {
            let msg = format!("{}: command not found\n", name).into_bytes();
            let len = msg.len();
            // The whole message is the captured stderr: its total and head are its own length.
            return Ok(exec_reply(127, None, false, started, (Vec::new(), 0, 0), (msg, len as u64, len)));
        }
    };
    let (program, argv, env, cwd) = (cmd.program, cmd.argv, cmd.env, cmd.cwd);
    let spawned = registry
        .spawn(&SpawnRequest { program: &program, argv: &argv, env: &env, cwd: &cwd, io: ChildIo::Pipes { stdin: !stdin.is_empty() } })
        .map_err(|e| OpError::new("spawn_failed", &format!("cannot start {}: {}", argv[0], e)))?;

    if let Some(fd) = spawned.stdin {
        thread::spawn(move || {
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            let _ = f.write_all(&stdin); // EPIPE when the command does not read it all: fine
        });
    }
    let out = collect(spawned.stdout, max_output);
    let err = collect(spawned.stderr, max_output);

    let deadline = timeout_ms.map(|t| started + Duration::from_millis(t as u64));
    let (status, timed_out) = match registry.wait_exit(spawned.pid, deadline) {
        Some(s) => (s, false),
        None => {
            sys::kill_group(spawned.pid, sys::SIGKILL);
            (registry.wait_exit(spawned.pid, None).expect("wait without deadline"), true)
        }
    };
    // Background children may still hold the pipes; give them a moment, then end the session's group.
    if !(out.1.wait(PIPE_GRACE) && err.1.wait(PIPE_GRACE)) {
        sys::kill_group(spawned.pid, sys::SIGKILL);
        out.1.wait(Duration::from_secs(1));
        err.1.wait(Duration::from_secs(1));
    }
    let code = if timed_out { 124 } else { status.code };
    let signal = if timed_out { None } else { status.signal };
    Ok(exec_reply(code, signal, timed_out, started, finish(&out.0), finish(&err.0)))
}

fn finish(c: &Arc<Mutex<Capture>>) -> (Vec<u8>, u64, usize) {
    let c = c.lock().unwrap();
    let (bytes, total) = c.finish();
    (bytes, total, c.head_len())
}

fn exec_reply(
    code: i32,
    signal: Option<i32>,
    timed_out: bool,
    started: Instant,
    out: (Vec<u8>, u64, usize),
    err: (Vec<u8>, u64, usize),
) -> Reply {
    let header = obj(vec![
        ("exit_code", Json::Int(code as i64)),
        ("signal", signal.map(|s| Json::Int(s as i64)).unwrap_or(Json::Null)),
        ("timed_out", Json::Bool(timed_out)),
        ("duration_ms", Json::Int(started.elapsed().as_millis() as i64)),
        ("stdout_len", Json::Int(out.0.len() as i64)),
        ("stdout_total", Json::Int(out.1 as i64)),
        ("stdout_head_len", Json::Int(out.2 as i64)),
        ("stderr_len", Json::Int(err.0.len() as i64)),
        ("stderr_total", Json::Int(err.1 as i64)),
        ("stderr_head_len", Json::Int(err.2 as i64)),
    ]);
    let mut payload = out.0;
    payload.extend(err.0);
    Reply { header, payload }
}

/// A flag a reader thread sets when it reaches EOF, waitable with a timeout.
pub struct Done(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Done {
    pub fn wait(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.0;
        let guard = lock.lock().unwrap();
        let (guard, _) = cv.wait_timeout_while(guard, timeout, |done| !*done).unwrap();
        *guard
    }
}

fn collect(fd: i32, cap: usize) -> (Arc<Mutex<Capture>>, Done) {
    let capture = Arc::new(Mutex::new(Capture::new(cap)));
    let done = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (c2, d2) = (capture.clone(), done.clone());
    thread::spawn(move || {
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => c2.lock().unwrap().push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let (lock, cv) = &*d2;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    });
    (capture, Done(done))
}
