//! pyro-agent: PID 1 of a pyro microVM. Sets up the guest, then serves framed requests from the host
//! on the virtio-serial port `org.pyro.agent`.

mod beneath;
mod capture;
mod command;
mod exec;
mod files;
mod frame;
mod freeze;
mod hardening;
mod identity;
mod init;
mod json;
mod process;
mod probes;
mod protocol;
mod services;
mod shells;
mod sys;
mod tar_extract;
mod workspace_disk;

use json::{obj, s, Json};
use protocol::{Context, Writer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn main() {
    let is_init = std::process::id() == 1;
    if is_init {
        init::setup_system();
        hardening::protect_agent();
        freeze::thaw_left_behind();
        workspace_disk::remember_disk();
    }
    let registry = Arc::new(process::Registry::new());
    if is_init {
        let r = registry.clone();
        std::thread::spawn(move || r.reap_forever());
    }
    let boot_ms = init::uptime_ms();
    // Services and shells outlive any one host connection.
    let services = Arc::new(services::Services::default());
    let shells = Arc::new(shells::Shells::default());
    loop {
        match init::find_port() {
            Some(path) => serve(&path, registry.clone(), services.clone(), shells.clone(), boot_ms),
            None => eprintln!("pyro-agent: virtio port {} not found; retrying", init::PORT_NAME),
        }
        // PID 1 must never exit (the kernel would panic); keep trying.
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn serve(path: &str, registry: Arc<process::Registry>, services: Arc<services::Services>, shells: Arc<shells::Shells>, boot_ms: i64) {
    let port = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) => return eprintln!("pyro-agent: cannot open {}: {}", path, e),
    };
    let write_half = match port.try_clone() {
        Ok(f) => f,
        Err(e) => return eprintln!("pyro-agent: cannot dup port: {}", e),
    };
    let writer = Writer(Arc::new(Mutex::new(write_half)));
    let ctx = Arc::new(Context { registry, services, shells, writer: writer.clone(), boot_ms, session: Default::default() });
    writer.send(&ready_event(boot_ms), &[]);
    eprintln!("pyro-agent: ready on {} ({} ms after kernel start)", path, boot_ms);
    protocol::serve_host(port, &writer, |header, payload| protocol::handle_frame(&ctx, header, payload));
}

fn ready_event(boot_ms: i64) -> Json {
    obj(vec![
        ("id", Json::Int(0)),
        ("event", s("ready")),
        ("protocol", Json::Int(protocol::PROTOCOL_VERSION)),
        ("agent_version", s(protocol::AGENT_VERSION)),
        ("boot_ms", Json::Int(boot_ms)),
    ])
}
