//! Request dispatch: one JSON header (+ payload) in, one reply frame out, matched by `id`.

use crate::json::{obj, s, Json};
use crate::process::Registry;
use crate::{exec, files, frame};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub const PROTOCOL_VERSION: i64 = 1;
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct Reply {
    pub header: Json,
    pub payload: Vec<u8>,
}

impl Reply {
    pub fn header(header: Json) -> Reply {
        Reply { header, payload: Vec::new() }
    }
}

#[derive(Debug)]
pub struct OpError {
    pub code: String,
    pub message: String,
}

impl OpError {
    pub fn new(code: &str, message: &str) -> OpError {
        OpError { code: code.to_string(), message: message.to_string() }
    }
    pub fn bad_request(message: &str) -> OpError {
        OpError::new("bad_request", message)
    }
}

/// Serialises whole frames onto the port; many request threads share it.
#[derive(Clone)]
pub struct Writer(pub Arc<Mutex<std::fs::File>>);

impl Writer {
    pub fn send(&self, header: &Json, payload: &[u8]) {
        let bytes = frame::encode(header.to_string().as_bytes(), payload);
        let mut port = self.0.lock().unwrap();
        if let Err(e) = port.write_all(&bytes) {
            eprintln!("pyro-agent: write to host failed: {}", e);
        }
    }

    /// Sends a reply only if no new host session began since its request arrived: checked under the
    /// port lock, so a reply either precedes the new session's hello answer or is dropped.
    fn send_in_session(&self, session: &AtomicU64, asked_in: u64, header: &Json, payload: &[u8]) {
        let bytes = frame::encode(header.to_string().as_bytes(), payload);
        let mut port = self.0.lock().unwrap();
        if session.load(Ordering::SeqCst) != asked_in {
            return; // the host that asked is gone (killed mid-request); its successor never asked
        }
        if let Err(e) = port.write_all(&bytes) {
            eprintln!("pyro-agent: write to host failed: {}", e);
        }
    }
}

/**
 * Reads frames from the host until the port fails for good, answering garbage with a `bad_frame`
 * error and handing each frame to `on_frame`. EOF means no host is connected (runtime-facts G6):
 * the partial frame is dropped and the port polled again.
 */
/// How long an idle agent sleeps between checks of a host connection if the kernel's SIGIO for it
/// were ever missed (it is sent on every virtio_console PORT_OPEN): a delay bound, not a poll.
const MISSED_HOST_SIGNAL_BOUND_MS: u64 = 1_000;

pub fn serve_host(mut reader: std::fs::File, writer: &Writer, mut on_frame: impl FnMut(Vec<u8>, Vec<u8>)) {
    use std::io::Read;
    let mut decoder = crate::frame::Decoder::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut connected = true;
    // An idle VM has no host connected, and a read then returns EOF at once (G6): polling it every
    // 5 ms cost each idle VM ~10% of a host core under TCG. Woken by the host's connect instead; the
    // timeout only bounds a missed signal. Each timeout is a guest wake-up (QEMU's vCPU and main
    // loop with it): at 100 ms it was the largest source of an idle guest's wake-ups, so it is long.
    use std::os::unix::io::AsRawFd;
    let woken_on_connect = crate::sys::notify_on_host_open(reader.as_raw_fd()).is_ok();
    loop {
        match reader.read(&mut buf) {
            Ok(0) => {
                if connected {
                    decoder.reset();
                    connected = false;
                    // A freeze lives only as long as the connection of the host that asked for it.
                    crate::freeze::release_for_departed_host();
                }
                if woken_on_connect {
                    crate::sys::wait_for_host(MISSED_HOST_SIGNAL_BOUND_MS);
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                continue;
            }
            Ok(n) => {
                connected = true;
                decoder.push(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("pyro-agent: read from host failed: {}", e);
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        }
        while let Some(item) = decoder.next_item() {
            match item {
                crate::frame::Item::Frame { header, payload } => on_frame(header, payload),
                crate::frame::Item::Garbage { skipped, reason } => {
                    writer.send(&error_header(0, "bad_frame", &format!("skipped {} bytes: {}", skipped, reason)), &[])
                }
            }
        }
    }
}

pub struct Context {
    pub registry: Arc<Registry>,
    pub services: Arc<crate::services::Services>,
    pub shells: Arc<crate::shells::Shells>,
    pub writer: Writer,
    pub boot_ms: i64,
    /**
     * Bumped by a `hello` that starts a session, which a host sends first on each connection. A request still running
     * when its host died (kill -9, a VM paused and resumed under a new host) must not answer the next
     * host, which would see a reply to a request it never sent.
     */
    pub session: AtomicU64,
}

fn with_id(id: i64, ok: bool, mut header: Json) -> Json {
    if let Json::Object(ref mut map) = header {
        map.insert("id".into(), Json::Int(id));
        map.insert("ok".into(), Json::Bool(ok));
    }
    header
}

pub fn error_header(id: i64, code: &str, message: &str) -> Json {
    with_id(id, false, obj(vec![("error", obj(vec![("code", s(code)), ("message", s(message))]))]))
}

/// Parses and answers one frame. Never panics the caller: handler panics become error replies.
pub fn handle_frame(ctx: &Arc<Context>, header_bytes: Vec<u8>, payload: Vec<u8>) {
    let header = match crate::json::parse(&header_bytes) {
        Ok(h @ Json::Object(_)) => h,
        Ok(_) => return ctx.writer.send(&error_header(0, "bad_request", "header must be a JSON object"), &[]),
        Err(e) => return ctx.writer.send(&error_header(0, "bad_request", &format!("invalid JSON header: {}", e)), &[]),
    };
    let id = match header.get("id").and_then(Json::as_i64) {
        Some(id) if id > 0 => id,
        _ => return ctx.writer.send(&error_header(0, "bad_request", "header needs a positive integer id"), &[]),
    };
    let op = header.get("op").and_then(Json::as_str).unwrap_or("").to_string();
    if op == "hello" && matches!(header.get("new_session"), Some(Json::Bool(true))) {
        ctx.session.fetch_add(1, Ordering::SeqCst);
        // A new host: whoever froze /workspace is gone, even if its EOF was never seen.
        crate::freeze::release_for_departed_host();
    }
    let session = ctx.session.load(Ordering::SeqCst);
    // Metadata-only requests are answered inline: a thread costs more than the work under TCG.
    // Anything that may block (exec, file contents, shutdown) gets its own thread. A restored VM
    // runs identity.set and the mount of an already mounted /workspace first thing, and under TCG
    // its first thread costs ~20 ms of code translation on top of the work.
    if matches!(op.as_str(), "hello" | "file.stat" | "identity.set" | "") || (op == "workspace.mount" && crate::workspace_disk::mounted_at(crate::workspace_disk::MOUNT_POINT)) {
        return answer(ctx, session, id, &op, &header, payload);
    }
    let ctx = ctx.clone();
    std::thread::spawn(move || {
        // Spawned by the host reader, whose SIGIO is blocked; commands forked from here must not inherit that.
        crate::sys::unblock_host_signal();
        answer(&ctx, session, id, &op, &header, payload)
    });
}

/// `sync_after: true` on a request: flush the guest's page cache to its disks after the op and
/// before the reply, which then says `synced: true`. One round trip instead of the op and a `sync`
/// (a host that sees no `synced` from an older agent sends the `sync` itself). Meant for ops that
/// get their own thread (exec): on one answered inline the flush would hold the host reader.
fn wants_sync_after(header: &Json) -> bool {
    matches!(header.get("sync_after"), Some(Json::Bool(true)))
}

fn answer(ctx: &Context, session: u64, id: i64, op: &str, header: &Json, payload: Vec<u8>) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(ctx, op, header, payload))).map(|result| {
        result.map(|mut reply| {
            if wants_sync_after(header) {
                crate::sys::sync_all();
                if let Json::Object(ref mut map) = reply.header {
                    map.insert("synced".into(), Json::Bool(true));
                }
            }
            reply
        })
    });
    let send = |h: &Json, p: &[u8]| ctx.writer.send_in_session(&ctx.session, session, h, p);
    match outcome {
        Ok(Ok(reply)) => send(&with_id(id, true, reply.header), &reply.payload),
        Ok(Err(e)) => send(&error_header(id, &e.code, &e.message), &[]),
        Err(_) => send(&error_header(id, "agent_panic", &format!("agent failed while handling {}", op)), &[]),
    }
    if op == "shutdown" {
        shutdown_now();
    }
}

fn dispatch(ctx: &Context, op: &str, header: &Json, payload: Vec<u8>) -> Result<Reply, OpError> {
    match op {
        "hello" => hello(ctx, header),
        "exec" => exec::exec(&ctx.registry, header, payload),
        "file.read" => files::read(header),
        "file.write" => files::write(header, payload),
        "file.stat" => files::stat(header),
        "file.list" => files::list(header),
        "file.mkdir" => files::mkdir(header),
        "file.remove" => files::remove(header),
        "file.extract" => crate::tar_extract::extract(header),
        "tree.unpack" => crate::tar_extract::unpack(header, payload),
        "workspace.mount" => crate::workspace_disk::mount(header),
        "tree.manifest" => crate::workspace_disk::manifest(header),
        "tree.changes" => crate::workspace_disk::changes(header),
        "fs.freeze" => crate::freeze::freeze(header),
        "fs.thaw" => crate::freeze::thaw(header),
        "service.start" => ctx.services.start(&ctx.registry, header),
        "service.status" => ctx.services.status(header),
        "service.list" => ctx.services.list(),
        "service.stop" => ctx.services.stop(header),
        "shell.open" => ctx.shells.open(&ctx.registry, header),
        "shell.read" => ctx.shells.read(header),
        "shell.write" => ctx.shells.write(header, payload),
        "shell.signal" => ctx.shells.signal(header),
        "shell.close" => ctx.shells.close(header),
        "probe.tcp" => crate::probes::tcp(header),
        "probe.http" => crate::probes::http(header),
        "identity.set" => crate::identity::set(header, payload),
        "shutdown" => Ok(Reply::header(obj(vec![]))),
        // Flush the guest page cache to the virtual disk, so the host may kill the VMM without loss:
        // every filesystem, or with `path` only the one holding it (files::sync_filesystem_of).
        "sync" => {
            match header.get("path").and_then(Json::as_str) {
                Some(path) => crate::files::sync_filesystem_of(path),
                None => crate::sys::sync_all(),
            }
            Ok(Reply::header(obj(vec![])))
        }
        "" => Err(OpError::bad_request("header needs an op")),
        other => Err(OpError::new("unknown_op", &format!("unknown op {:?} (agent {})", other, AGENT_VERSION))),
    }
}

fn hello(ctx: &Context, header: &Json) -> Result<Reply, OpError> {
    // The host's clock is authoritative: a guest restored from a snapshot wakes up in the past.
    if let Some(ms) = header.get("host_time_ms").and_then(Json::as_i64) {
        if ms > 0 {
            let _ = crate::sys::set_realtime_ms(ms as u64);
        }
    }
    Ok(Reply::header(obj(vec![
        ("protocol", Json::Int(PROTOCOL_VERSION)),
        ("agent_version", s(AGENT_VERSION)),
        ("boot_ms", Json::Int(ctx.boot_ms)),
        ("uptime_ms", Json::Int(crate::init::uptime_ms())),
    ])))
}

fn shutdown_now() {
    crate::sys::sync_all();
    if let Err(e) = crate::sys::power_off() {
        eprintln!("pyro-agent: power off failed: {}", e);
    }
}
