//! Interactive shells on pseudo-terminals. Output is kept in a ring buffer addressed by absolute
//! byte offsets (cursors), so a reader can page through it and knows when old output was dropped.

use crate::command::CommandSpec;
use crate::json::{obj, s, Json};
use crate::process::{ChildIo, ExitStatus, Registry, SpawnRequest};
use crate::protocol::{OpError, Reply};
use crate::sys;
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::io::FromRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const RING_BYTES: usize = 1 << 20;
const MAX_WAIT: Duration = Duration::from_secs(30);

struct Output {
    data: VecDeque<u8>,
    /// Absolute offset of data[0].
    start: u64,
    last_output: Instant,
    eof: bool,
}

struct Shell {
    pid: i32,
    master: std::fs::File,
    output: Mutex<Output>,
    changed: Condvar,
    exit: Mutex<Option<ExitStatus>>,
    cols: u16,
    rows: u16,
}

#[derive(Default)]
pub struct Shells {
    map: Mutex<BTreeMap<String, Arc<Shell>>>,
    next: AtomicU64,
}

fn shell_arg(map: &BTreeMap<String, Arc<Shell>>, header: &Json) -> Result<(String, Arc<Shell>), OpError> {
    let id = header.get("shell_id").and_then(Json::as_str).ok_or_else(|| OpError::bad_request("shell_id is required"))?;
    let shell = map.get(id).ok_or_else(|| OpError::new("not_found", &format!("no shell {}", id)))?;
    Ok((id.to_string(), shell.clone()))
}

fn state(id: &str, shell: &Shell) -> Vec<(&'static str, Json)> {
    let exit = *shell.exit.lock().unwrap();
    vec![
        ("shell_id", s(id)),
        ("pid", Json::Int(shell.pid as i64)),
        ("running", Json::Bool(exit.is_none())),
        ("exit_code", exit.map(|e| Json::Int(e.code as i64)).unwrap_or(Json::Null)),
        ("cols", Json::Int(shell.cols as i64)),
        ("rows", Json::Int(shell.rows as i64)),
    ]
}

impl Shells {
    pub fn open(&self, registry: &Arc<Registry>, header: &Json) -> Result<Reply, OpError> {
        let cols = header.get("cols").and_then(Json::as_i64).unwrap_or(120).clamp(10, 1000) as u16;
        let rows = header.get("rows").and_then(Json::as_i64).unwrap_or(30).clamp(5, 1000) as u16;
        let mut cmd = CommandSpec::require(header)?;
        cmd.env.retain(|(k, _)| k != "TERM");
        cmd.env.push(("TERM".into(), "xterm-256color".into()));
        let (master_fd, slave_fd) = sys::open_pty(cols, rows).map_err(|e| OpError::new("io_error", &format!("openpty: {}", e)))?;
        let spawned = registry.spawn(&SpawnRequest { program: &cmd.program, argv: &cmd.argv, env: &cmd.env, cwd: &cmd.cwd, io: ChildIo::Terminal { slave: slave_fd } });
        unsafe { sys::close(slave_fd) };
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                unsafe { sys::close(master_fd) };
                return Err(OpError::new("spawn_failed", &format!("cannot start {}: {}", cmd.argv[0], e)));
            }
        };
        let master = unsafe { std::fs::File::from_raw_fd(master_fd) };
        let reader = master.try_clone().map_err(|e| OpError::new("io_error", &e.to_string()))?;
        let shell = Arc::new(Shell {
            pid: spawned.pid,
            master,
            output: Mutex::new(Output { data: VecDeque::new(), start: 0, last_output: Instant::now(), eof: false }),
            changed: Condvar::new(),
            exit: Mutex::new(None),
            cols,
            rows,
        });
        let id = format!("sh-{}", self.next.fetch_add(1, Ordering::SeqCst) + 1);
        let pump = shell.clone();
        std::thread::spawn(move || pump_output(pump, reader));
        let (watch, reg) = (shell.clone(), registry.clone());
        std::thread::spawn(move || {
            let status = reg.wait_exit(watch.pid, None);
            *watch.exit.lock().unwrap() = status;
            watch.changed.notify_all();
        });
        let reply = obj(state(&id, &shell));
        self.map.lock().unwrap().insert(id, shell);
        Ok(Reply::header(reply))
    }

    /// Output from `cursor`, optionally after waiting until the shell has been quiet for a while.
    pub fn read(&self, header: &Json) -> Result<Reply, OpError> {
        let (id, shell) = shell_arg(&self.map.lock().unwrap(), header)?;
        let cursor = header.get("cursor").and_then(Json::as_i64).unwrap_or(0).max(0) as u64;
        let max = header.get("max_bytes").and_then(Json::as_i64).unwrap_or(65536).clamp(1, RING_BYTES as i64) as usize;
        let idle = header.get("wait_for_idle_ms").and_then(Json::as_i64).filter(|v| *v > 0).map(|v| Duration::from_millis(v as u64));
        let mut out = shell.output.lock().unwrap();
        if let Some(idle) = idle {
            let deadline = Instant::now() + MAX_WAIT;
            loop {
                let quiet_for = out.last_output.elapsed();
                let has_new = out.start + out.data.len() as u64 > cursor;
                if (has_new && quiet_for >= idle) || out.eof || Instant::now() >= deadline {
                    break;
                }
                let wait = if has_new { idle - quiet_for } else { idle.max(Duration::from_millis(50)) };
                out = shell.changed.wait_timeout(out, wait.min(deadline.saturating_duration_since(Instant::now()))).unwrap().0;
            }
        }
        let end = out.start + out.data.len() as u64;
        let from = cursor.max(out.start).min(end);
        let skip = (from - out.start) as usize;
        let data: Vec<u8> = out.data.iter().skip(skip).take(max).copied().collect();
        let next = from + data.len() as u64;
        let mut pairs = state(&id, &shell);
        pairs.push(("cursor", Json::Int(from as i64)));
        pairs.push(("next_cursor", Json::Int(next as i64)));
        pairs.push(("end_cursor", Json::Int(end as i64)));
        pairs.push(("dropped_bytes", Json::Int(from.saturating_sub(cursor) as i64)));
        Ok(Reply { header: obj(pairs), payload: data })
    }

    pub fn write(&self, header: &Json, input: Vec<u8>) -> Result<Reply, OpError> {
        let (id, shell) = shell_arg(&self.map.lock().unwrap(), header)?;
        if shell.exit.lock().unwrap().is_some() {
            return Err(OpError::new("exited", &format!("shell {} has exited", id)));
        }
        (&shell.master).write_all(&input).map_err(|e| OpError::new("io_error", &e.to_string()))?;
        Ok(Reply::header(obj(vec![("shell_id", s(&id)), ("bytes", Json::Int(input.len() as i64))])))
    }

    /// Signals the terminal's foreground process group (what Ctrl-C would reach), else the shell.
    pub fn signal(&self, header: &Json) -> Result<Reply, OpError> {
        let (id, shell) = shell_arg(&self.map.lock().unwrap(), header)?;
        let sig = match header.get("signal").and_then(Json::as_str).unwrap_or("INT") {
            "HUP" => 1,
            "INT" => 2,
            "KILL" => 9,
            "TERM" => 15,
            other => return Err(OpError::bad_request(&format!("unsupported signal {} (use HUP, INT, TERM or KILL)", other))),
        };
        use std::os::unix::io::AsRawFd;
        let target = sys::foreground_group(shell.master.as_raw_fd()).filter(|g| *g > 1).unwrap_or(shell.pid);
        sys::kill_group(target, sig);
        Ok(Reply::header(obj(vec![("shell_id", s(&id)), ("signal", Json::Int(sig as i64)), ("process_group", Json::Int(target as i64))])))
    }

    pub fn close(&self, header: &Json) -> Result<Reply, OpError> {
        let (id, shell) = shell_arg(&self.map.lock().unwrap(), header)?;
        sys::kill_group(shell.pid, 1);
        let deadline = Instant::now() + Duration::from_millis(500);
        while shell.exit.lock().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        sys::kill_group(shell.pid, sys::SIGKILL);
        self.map.lock().unwrap().remove(&id);
        let mut pairs = state(&id, &shell);
        pairs.push(("closed", Json::Bool(true)));
        Ok(Reply::header(obj(pairs)))
    }
}

fn pump_output(shell: Arc<Shell>, mut reader: std::fs::File) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // EIO once the last process holding the terminal is gone.
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out = shell.output.lock().unwrap();
        out.data.extend(&buf[..n]);
        let excess = out.data.len().saturating_sub(RING_BYTES);
        if excess > 0 {
            out.data.drain(..excess);
            out.start += excess as u64;
        }
        out.last_output = Instant::now();
        drop(out);
        shell.changed.notify_all();
    }
    shell.output.lock().unwrap().eof = true;
    shell.changed.notify_all();
}
