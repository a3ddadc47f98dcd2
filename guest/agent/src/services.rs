//! Long-running services: started in their own session, output to files under /run/pyro-services,
//! exit status recorded when they die. Never restarted silently.

use crate::command::CommandSpec;
use crate::json::{obj, s, Json};
use crate::process::{ChildIo, ExitStatus, Registry, SpawnRequest};
use crate::protocol::{OpError, Reply};
use crate::sys;
use std::collections::BTreeMap;
use std::os::unix::io::IntoRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SERVICE_ROOT: &str = "/run/pyro-services";

struct Service {
    pid: i32,
    started_uptime_ms: i64,
    exit: Arc<Mutex<Option<ExitStatus>>>,
    stop_requested: bool,
}

#[derive(Default)]
pub struct Services {
    map: Mutex<BTreeMap<String, Service>>,
}

fn name_arg(header: &Json) -> Result<String, OpError> {
    let name = header.get("name").and_then(Json::as_str).ok_or_else(|| OpError::bad_request("name is required"))?;
    let ok = !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) && !name.starts_with('.');
    if !ok {
        return Err(OpError::bad_request("service names use letters, digits, '.', '_' and '-'"));
    }
    Ok(name.to_string())
}

fn describe(name: &str, svc: &Service) -> Json {
    let exit = *svc.exit.lock().unwrap();
    obj(vec![
        ("name", s(name)),
        ("pid", Json::Int(svc.pid as i64)),
        ("running", Json::Bool(exit.is_none())),
        ("exit_code", exit.map(|e| Json::Int(e.code as i64)).unwrap_or(Json::Null)),
        ("signal", exit.and_then(|e| e.signal).map(|v| Json::Int(v as i64)).unwrap_or(Json::Null)),
        ("stopped_by_request", Json::Bool(svc.stop_requested)),
        ("started_uptime_ms", Json::Int(svc.started_uptime_ms)),
        ("stdout_path", s(&format!("{}/{}/stdout.log", SERVICE_ROOT, name))),
        ("stderr_path", s(&format!("{}/{}/stderr.log", SERVICE_ROOT, name))),
    ])
}

impl Services {
    pub fn start(&self, registry: &Arc<Registry>, header: &Json) -> Result<Reply, OpError> {
        let name = name_arg(header)?;
        let cmd = CommandSpec::require(header)?;
        let mut map = self.map.lock().unwrap();
        if let Some(existing) = map.get(&name) {
            if existing.exit.lock().unwrap().is_none() {
                return Err(OpError::new("already_running", &format!("service {} is already running (pid {})", name, existing.pid)));
            }
        }
        let dir = format!("{}/{}", SERVICE_ROOT, name);
        std::fs::create_dir_all(&dir).map_err(|e| OpError::new("io_error", &format!("{}: {}", dir, e)))?;
        let open_log = |file: &str| {
            std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(format!("{}/{}", dir, file)).map_err(|e| OpError::new("io_error", &e.to_string()))
        };
        let (out, err) = (open_log("stdout.log")?, open_log("stderr.log")?);
        let (out_fd, err_fd) = (out.into_raw_fd(), err.into_raw_fd());
        let spawned = registry.spawn(&SpawnRequest { program: &cmd.program, argv: &cmd.argv, env: &cmd.env, cwd: &cmd.cwd, io: ChildIo::Files { stdout: out_fd, stderr: err_fd } });
        unsafe {
            sys::close(out_fd);
            sys::close(err_fd);
        }
        let spawned = spawned.map_err(|e| OpError::new("spawn_failed", &format!("cannot start {}: {}", cmd.argv[0], e)))?;
        let exit = Arc::new(Mutex::new(None));
        let (reg, slot, pid) = (registry.clone(), exit.clone(), spawned.pid);
        std::thread::spawn(move || {
            let status = reg.wait_exit(pid, None);
            *slot.lock().unwrap() = status;
        });
        let svc = Service { pid, started_uptime_ms: crate::init::uptime_ms(), exit, stop_requested: false };
        let reply = describe(&name, &svc);
        map.insert(name, svc);
        Ok(Reply::header(reply))
    }

    pub fn status(&self, header: &Json) -> Result<Reply, OpError> {
        let name = name_arg(header)?;
        let map = self.map.lock().unwrap();
        let svc = map.get(&name).ok_or_else(|| OpError::new("not_found", &format!("no service named {}", name)))?;
        Ok(Reply::header(describe(&name, svc)))
    }

    pub fn list(&self) -> Result<Reply, OpError> {
        let map = self.map.lock().unwrap();
        Ok(Reply::header(obj(vec![("services", Json::Array(map.iter().map(|(n, svc)| describe(n, svc)).collect()))])))
    }

    /// SIGTERM to the service's process group, SIGKILL after the grace period.
    pub fn stop(&self, header: &Json) -> Result<Reply, OpError> {
        let name = name_arg(header)?;
        let grace = Duration::from_millis(header.get("grace_ms").and_then(Json::as_i64).unwrap_or(3000).max(0) as u64);
        let (pid, exit) = {
            let mut map = self.map.lock().unwrap();
            let svc = map.get_mut(&name).ok_or_else(|| OpError::new("not_found", &format!("no service named {}", name)))?;
            svc.stop_requested = true;
            (svc.pid, svc.exit.clone())
        };
        if exit.lock().unwrap().is_none() {
            sys::kill_group(pid, 15);
            let deadline = Instant::now() + grace;
            while exit.lock().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if exit.lock().unwrap().is_none() {
                sys::kill_group(pid, sys::SIGKILL);
                while exit.lock().unwrap().is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        } else {
            // Already dead; still end anything it left in its group.
            sys::kill_group(pid, sys::SIGKILL);
        }
        let map = self.map.lock().unwrap();
        Ok(Reply::header(describe(&name, map.get(&name).expect("service present"))))
    }
}
