//! Child processes of PID 1: our own fork/exec (so no library can race us on waitpid) and the
//! reaper that collects every exit, ours and orphans alike.

use crate::sys;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::raw::{c_char, c_int};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    watched: HashSet<i32>,
    exited: HashMap<i32, i32>,
    spawn_generation: u64,
}

/// Exit statuses of the children someone is waiting for. Orphans are reaped and forgotten.
pub struct Registry {
    state: Mutex<State>,
    changed: Condvar,
}

pub struct Spawned {
    pub pid: i32,
    pub stdin: Option<c_int>,
    /// Read ends of the output pipes (ChildIo::Pipes only; -1 otherwise).
    pub stdout: c_int,
    pub stderr: c_int,
}

/// Where a child's standard streams go.
pub enum ChildIo {
    /// stdout/stderr on pipes (and stdin on a pipe when `stdin`), for exec.
    Pipes { stdin: bool },
    /// stdout/stderr appended to files, stdin from /dev/null, for services.
    Files { stdout: c_int, stderr: c_int },
    /// All three on a pseudo-terminal slave, which becomes the controlling terminal, for shells.
    Terminal { slave: c_int },
}

pub struct SpawnRequest<'a> {
    pub program: &'a str,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub cwd: &'a str,
    pub io: ChildIo,
}

#[derive(Clone, Copy, Debug)]
pub struct ExitStatus {
    pub code: i32,
    pub signal: Option<i32>,
}

impl ExitStatus {
    pub fn from_raw(raw: i32) -> ExitStatus {
        let sig = raw & 0x7f;
        if sig == 0 {
            ExitStatus { code: (raw >> 8) & 0xff, signal: None }
        } else {
            ExitStatus { code: 128 + sig, signal: Some(sig) }
        }
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry { state: Mutex::new(State::default()), changed: Condvar::new() }
    }

    /// Runs forever: reaps any child and records the status if someone watches that pid.
    pub fn reap_forever(&self) {
        loop {
            let generation = self.state.lock().unwrap().spawn_generation;
            let mut status: c_int = 0;
            let pid = unsafe { sys::waitpid(-1, &mut status, 0) };
            if pid > 0 {
                let mut st = self.state.lock().unwrap();
                if st.watched.remove(&pid) {
                    st.exited.insert(pid, status);
                    self.changed.notify_all();
                }
                continue;
            }
            // ECHILD (no children) or EINTR: sleep until the next spawn, re-checking the generation
            // so a spawn between waitpid and this wait is not missed.
            let st = self.state.lock().unwrap();
            if st.spawn_generation == generation {
                let _ = self.changed.wait_timeout(st, Duration::from_secs(5)).unwrap();
            }
        }
    }

    /// Waits for a watched child; `None` when the deadline passes first.
    pub fn wait_exit(&self, pid: i32, deadline: Option<Instant>) -> Option<ExitStatus> {
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(raw) = st.exited.remove(&pid) {
                return Some(ExitStatus::from_raw(raw));
            }
            match deadline {
                None => st = self.changed.wait(st).unwrap(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    st = self.changed.wait_timeout(st, d - now).unwrap().0;
                }
            }
        }
    }

    /// fork + execve in a new session, with stdout/stderr (and optionally stdin) on pipes.
    pub fn spawn(&self, req: &SpawnRequest) -> io::Result<Spawned> {
        // Everything the child touches is allocated before fork: after fork only async-signal-safe calls.
        let path = sys::cstr(req.program)?;
        let argv: Vec<CString> = req.argv.iter().map(|a| sys::cstr(a)).collect::<io::Result<_>>()?;
        let envp: Vec<CString> =
            req.env.iter().map(|(k, v)| sys::cstr(&format!("{}={}", k, v))).collect::<io::Result<_>>()?;
        let cwd = sys::cstr(req.cwd)?;
        let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());
        let devnull = std::fs::File::open("/dev/null")?;
        use std::os::unix::io::AsRawFd;
        let with_pipes = matches!(req.io, ChildIo::Pipes { .. });
        let stdin_pipe = if let ChildIo::Pipes { stdin: true } = req.io { Some(sys::make_pipe()?) } else { None };
        let out = if with_pipes { sys::make_pipe()? } else { (-1, -1) };
        let err = if with_pipes { sys::make_pipe()? } else { (-1, -1) };
        let (child_in, child_out, child_err) = match req.io {
            ChildIo::Pipes { .. } => (stdin_pipe.map(|(r, _)| r).unwrap_or(devnull.as_raw_fd()), out.1, err.1),
            ChildIo::Files { stdout, stderr } => (devnull.as_raw_fd(), stdout, stderr),
            ChildIo::Terminal { slave } => (slave, slave, slave),
        };
        let terminal = if let ChildIo::Terminal { slave } = req.io { Some(slave) } else { None };
        let report = sys::make_pipe()?;

        let mut st = self.state.lock().unwrap();
        let pid = unsafe { sys::fork() };
        if pid == 0 {
            unsafe {
                sys::setsid();
                crate::hardening::confine_child();
                if let Some(tty) = terminal {
                    sys::set_controlling_tty(tty);
                }
                sys::dup2(child_in, 0);
                sys::dup2(child_out, 1);
                sys::dup2(child_err, 2);
                // Rust ignores SIGPIPE in the agent; commands expect the default.
                sys::signal(sys::SIGPIPE, sys::SIG_DFL);
                if sys::chdir(cwd.as_ptr()) != 0 {
                    child_fail(report.1);
                }
                sys::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
                child_fail(report.1);
            }
        }
        if pid < 0 {
            let e = io::Error::last_os_error();
            drop(st);
            for fd in [out.0, out.1, err.0, err.1, report.0, report.1] {
                if fd >= 0 {
                    unsafe { sys::close(fd) };
                }
            }
            return Err(e);
        }
        st.watched.insert(pid);
        st.spawn_generation += 1;
        self.changed.notify_all();
        drop(st);

        unsafe {
            if with_pipes {
                sys::close(out.1);
                sys::close(err.1);
            }
            sys::close(report.1);
            if let Some((r, _)) = stdin_pipe {
                sys::close(r);
            }
        }
        // The report pipe is CLOEXEC: EOF means execve succeeded, 4 bytes mean it failed with that errno.
        let mut errno_bytes = [0u8; 4];
        let n = read_full(report.0, &mut errno_bytes);
        unsafe { sys::close(report.0) };
        if n == 4 {
            let errno = i32::from_ne_bytes(errno_bytes);
            let _ = self.wait_exit(pid, None);
            unsafe {
                if with_pipes {
                    sys::close(out.0);
                    sys::close(err.0);
                }
                if let Some((_, w)) = stdin_pipe {
                    sys::close(w);
                }
            }
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(Spawned { pid, stdin: stdin_pipe.map(|(_, w)| w), stdout: out.0, stderr: err.0 })
    }
}

unsafe fn child_fail(report_fd: c_int) -> ! {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let bytes = errno.to_ne_bytes();
    sys::write(report_fd, bytes.as_ptr() as *const _, 4);
    sys::_exit(127)
}

fn read_full(fd: c_int, buf: &mut [u8]) -> usize {
    use std::io::Read;
    use std::os::unix::io::FromRawFd;
    // Borrow the fd as a File without taking ownership.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    got
}

/// Resolves a program name against PATH the way execvp would, so "not found" is known before fork.
/// A name with a slash is taken relative to the command's working directory, not the agent's.
pub fn resolve_program(name: &str, path_var: &str, cwd: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if name.contains('/') {
        let full = std::path::Path::new(cwd).join(name);
        return if is_exec(&full) { Some(full.to_string_lossy().into_owned()) } else { None };
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| is_exec(p))
        .map(|p| p.to_string_lossy().into_owned())
}
