//! TEST ONLY — never put in a released initramfs. A guest agent that plays the attacker: root in a
//! workspace controls everything the host hears, so the host's tests boot this in place of the real
//! agent (test/hostile-agent.vm.test.ts builds its own runtime with it).
//!
//! It is the real agent (same modules, same PID 1 set-up) until told otherwise: when the file
//! `/run/pyro-hostile/mode` holds "<op> <mode>", the next request whose op matches (`*` = any) is
//! answered with the hostile frames of `<mode>` and the file is removed. The test writes that file
//! through an honest `file.write`, so every mode is one deterministic shot.
#![allow(dead_code)]

#[path = "../beneath.rs"]
mod beneath;
#[path = "../capture.rs"]
mod capture;
#[path = "../command.rs"]
mod command;
#[path = "../exec.rs"]
mod exec;
#[path = "../files.rs"]
mod files;
#[path = "../frame.rs"]
mod frame;
#[path = "../freeze.rs"]
mod freeze;
#[path = "../hardening.rs"]
mod hardening;
#[path = "../identity.rs"]
mod identity;
#[path = "../init.rs"]
mod init;
#[path = "../json.rs"]
mod json;
#[path = "../probes.rs"]
mod probes;
#[path = "../process.rs"]
mod process;
#[path = "../protocol.rs"]
mod protocol;
#[path = "../services.rs"]
mod services;
#[path = "../shells.rs"]
mod shells;
#[path = "../sys.rs"]
mod sys;
#[path = "../tar_extract.rs"]
mod tar_extract;
#[path = "../workspace_disk.rs"]
mod workspace_disk;

use json::{obj, s, Json};
use protocol::{Context, Writer};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MODE_FILE: &str = "/run/pyro-hostile/mode";

fn main() {
    let is_init = std::process::id() == 1;
    if is_init {
        init::setup_system();
    }
    let registry = Arc::new(process::Registry::new());
    if is_init {
        let r = registry.clone();
        std::thread::spawn(move || r.reap_forever());
    }
    let boot_ms = init::uptime_ms();
    let services = Arc::new(services::Services::default());
    let shells = Arc::new(shells::Shells::default());
    loop {
        if let Some(path) = init::find_port() {
            serve(&path, registry.clone(), services.clone(), shells.clone(), boot_ms);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn serve(path: &str, registry: Arc<process::Registry>, services: Arc<services::Services>, shells: Arc<shells::Shells>, boot_ms: i64) {
    let port = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(_) => return,
    };
    let writer = match port.try_clone() {
        Ok(f) => Writer(Arc::new(Mutex::new(f))),
        Err(_) => return,
    };
    let ctx = Arc::new(Context { registry, services, shells, writer: writer.clone(), boot_ms, session: Default::default() });
    writer.send(
        &obj(vec![
            ("id", Json::Int(0)),
            ("event", s("ready")),
            ("protocol", Json::Int(protocol::PROTOCOL_VERSION)),
            ("agent_version", s(protocol::AGENT_VERSION)),
            ("boot_ms", Json::Int(boot_ms)),
        ]),
        &[],
    );
    eprintln!("pyro-agent: ready on {} (HOSTILE test agent)", path);
    protocol::serve_host(port, &writer, |header, payload| match take_mode(&header) {
        Some((mode, id, request)) => misbehave(&writer, &mode, id, &request),
        None => protocol::handle_frame(&ctx, header, payload),
    });
}

/// The mode armed for this request, consuming it.
fn take_mode(header_bytes: &[u8]) -> Option<(String, i64, Json)> {
    let armed = std::fs::read_to_string(MODE_FILE).ok()?;
    let header = json::parse(header_bytes).ok()?;
    let id = header.get("id").and_then(Json::as_i64)?;
    let op = header.get("op").and_then(Json::as_str)?.to_string();
    let mut parts = armed.split_whitespace();
    let (target, mode) = (parts.next()?, parts.next()?.to_string());
    if target != "*" && target != op {
        return None;
    }
    let _ = std::fs::remove_file(MODE_FILE);
    eprintln!("pyro-agent: HOSTILE mode {} for {} #{}", mode, op, id);
    Some((mode, id, header))
}

fn raw(writer: &Writer, bytes: &[u8]) {
    let _ = writer.0.lock().unwrap().write_all(bytes);
}

fn prefix(header_len: u32, payload_len: u32) -> Vec<u8> {
    let mut p = frame::MAGIC.to_vec();
    p.extend_from_slice(&header_len.to_be_bytes());
    p.extend_from_slice(&payload_len.to_be_bytes());
    p
}

fn ok(id: i64, mut pairs: Vec<(&str, Json)>) -> Json {
    pairs.push(("id", Json::Int(id)));
    pairs.push(("ok", Json::Bool(true)));
    obj(pairs)
}

fn exec_reply(id: i64, stdout: &[u8]) -> (Json, Vec<u8>) {
    let n = stdout.len() as i64;
    let header = ok(
        id,
        vec![
            ("exit_code", Json::Int(0)),
            ("signal", Json::Null),
            ("timed_out", Json::Bool(false)),
            ("duration_ms", Json::Int(1)),
            ("stdout_len", Json::Int(n)),
            ("stdout_total", Json::Int(n)),
            ("stdout_head_len", Json::Int(n)),
            ("stderr_len", Json::Int(0)),
            ("stderr_total", Json::Int(0)),
            ("stderr_head_len", Json::Int(0)),
        ],
    );
    (header, stdout.to_vec())
}

fn misbehave(writer: &Writer, mode: &str, id: i64, request: &Json) {
    match mode {
        // A prefix announcing 100 MiB the host never asked for; only a little of it follows.
        "oversized-payload" => {
            let header = ok(id, vec![]).to_string();
            raw(writer, &prefix(header.len() as u32, 100 << 20));
            raw(writer, header.as_bytes());
            raw(writer, &vec![0u8; 64 * 1024]);
        }
        // A valid ~900 KiB header where the op's replies are small.
        "oversized-header" => {
            let header = ok(id, vec![("pad", s(&"A".repeat(900 * 1024)))]);
            writer.send(&header, &[]);
        }
        // A header length no frame may have (4 GiB).
        "impossible-length" => raw(writer, &prefix(u32::MAX, 0)),
        // Half a frame, then silence.
        "truncated" => {
            raw(writer, &prefix(100, 0));
            raw(writer, b"{\"id\":");
        }
        // Noise, then an honest-looking reply.
        "garbage" => {
            let noise: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
            raw(writer, &noise);
            writer.send(&ok(id, vec![]), &[]);
        }
        "event-flood" => {
            let mut burst = Vec::new();
            for n in 0..2000 {
                let event = obj(vec![("id", Json::Int(0)), ("event", s("log")), ("n", Json::Int(n))]).to_string();
                burst.extend(frame::encode(event.as_bytes(), &[]));
            }
            raw(writer, &burst);
        }
        "unknown-id" => writer.send(&ok(id + 1000, vec![]), &[]),
        "reused-id" => writer.send(&ok(id - 1, vec![]), &[]),
        "deep-json" => {
            let depth = 100_000;
            let header = format!("{{\"id\":{},\"ok\":true,\"x\":{}{}}}", id, "[".repeat(depth), "]".repeat(depth));
            raw(writer, &frame::encode(header.as_bytes(), &[]));
        }
        "wrong-types" => {
            let header = format!(
                "{{\"id\":{},\"ok\":true,\"protocol\":\"1\",\"agent_version\":7,\"boot_ms\":\"0\",\"uptime_ms\":-1,\
                 \"exit_code\":\"0\",\"timed_out\":\"no\",\"duration_ms\":1.5,\"stdout_len\":\"0\",\"stdout_total\":null,\
                 \"stdout_head_len\":[],\"stderr_len\":{{}},\"stderr_total\":0,\"stderr_head_len\":0,\
                 \"size\":\"big\",\"offset\":-5,\"truncated\":\"no\",\"path\":5,\"type\":7,\"mode\":\"rwx\",\"mtime_ms\":\"now\",\
                 \"entries\":\"none\",\"services\":{{\"a\":1}},\"name\":2,\"pid\":\"1\",\"running\":\"yes\",\
                 \"stopped_by_request\":0,\"started_uptime_ms\":\"x\",\"stdout_path\":1,\"stderr_path\":1,\
                 \"shell_id\":1,\"cols\":\"80\",\"rows\":\"24\",\"cursor\":\"0\",\"next_cursor\":\"0\",\"end_cursor\":\"0\",\
                 \"dropped_bytes\":\"0\",\"ready\":\"y\",\"detail\":1,\"bytes\":\"0\"}}",
                id
            );
            raw(writer, &frame::encode(header.as_bytes(), &[]));
        }
        "bad-utf8" => {
            let mut header = format!("{{\"id\":{},\"ok\":true,\"x\":\"", id).into_bytes();
            header.extend_from_slice(&[0xff, 0xfe, 0xc0, 0x80]);
            header.extend_from_slice(b"\"}");
            raw(writer, &frame::encode(&header, &[]));
        }
        // An exec reply that claims terabytes of output it does not carry.
        "exec-huge" => {
            let mut header = exec_reply(id, b"").0;
            if let Json::Object(ref mut map) = header {
                map.insert("stdout_len".into(), Json::Int(1 << 40));
                map.insert("stdout_total".into(), Json::Int(1 << 41));
                map.insert("stdout_head_len".into(), Json::Int(1 << 40));
            }
            writer.send(&header, &[]);
        }
        // A listing of a million entries: announced as one 60 MB header, streamed until the host hangs up.
        "list-million" => {
            let entry = |i: u32| format!("{{\"path\":\"/workspace/f{:07}\",\"type\":\"file\",\"size\":0,\"mode\":420,\"mtime_ms\":0}}", i);
            // Every entry has the same length (fixed-width names), so the total is arithmetic.
            let body_len = 1_000_000 * (entry(0).len() + 1) - 1 + format!("{{\"id\":{},\"ok\":true,\"truncated\":false,\"entries\":[]}}", id).len();
            raw(writer, &prefix(body_len as u32, 0));
            raw(writer, format!("{{\"id\":{},\"ok\":true,\"truncated\":false,\"entries\":[", id).as_bytes());
            let mut chunk = String::new();
            for i in 0..20_000u32 {
                chunk.push_str(&entry(i));
                chunk.push(',');
            }
            raw(writer, chunk.as_bytes());
        }
        // A small listing whose names climb out of the listed directory.
        "list-escape" => {
            let root = request.get("path").and_then(Json::as_str).unwrap_or("/workspace").trim_end_matches('/').to_string();
            let entries = ["../../etc/passwd", "/etc/shadow"]
                .iter()
                .map(|name| {
                    let path = if name.starts_with('/') { name.to_string() } else { format!("{}/{}", root, name) };
                    obj(vec![("path", s(&path)), ("type", s("file")), ("size", Json::Int(1)), ("mode", Json::Int(0o644)), ("mtime_ms", Json::Int(0))])
                })
                .collect();
            writer.send(&ok(id, vec![("entries", Json::Array(entries)), ("truncated", Json::Bool(false))]), &[]);
        }
        // tree.manifest replies (what diff and export read back) naming a path outside /workspace, or cut off.
        "manifest-escape" => writer.send(&ok(id, vec![("entries", Json::Int(1)), ("truncated", Json::Bool(false))]), b"f 644 1 0 0 1 1\0../../etc/passwd\0\0"),
        "manifest-garbage" => writer.send(&ok(id, vec![("entries", Json::Int(1)), ("truncated", Json::Bool(false))]), b"f 644 1 0 0 1 1\0unterminated"),
        // exec replies whose stdout is a hostile tar (what diff/export/baseline read back).
        m if m.starts_with("tar-") => {
            let tar = hostile_tar(&m[4..]);
            let (header, payload) = exec_reply(id, &tar);
            writer.send(&header, &payload);
        }
        other => writer.send(&protocol::error_header(id, "hostile_unknown_mode", other), &[]),
    }
}

/// One ustar header block (POSIX: name, mode, uid, gid, size, mtime, checksum, type, linkname, magic).
fn tar_header(name: &str, typeflag: u8, size: u64, link: &str) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
    let octal = |h: &mut Vec<u8>, at: usize, width: usize, v: u64| {
        let text = format!("{:0w$o}\0", v, w = width - 1);
        h[at..at + width].copy_from_slice(text.as_bytes());
    };
    octal(&mut h, 100, 8, 0o644);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, size);
    octal(&mut h, 136, 12, 0);
    h[148..156].copy_from_slice(b"        ");
    h[156] = typeflag;
    h[157..157 + link.len().min(100)].copy_from_slice(&link.as_bytes()[..link.len().min(100)]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u64 = h.iter().map(|b| *b as u64).sum();
    let text = format!("{:06o}\0 ", sum);
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

fn tar_file(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = tar_header(name, b'0', data.len() as u64, "");
    out.extend_from_slice(data);
    out.resize(out.len() + (512 - data.len() % 512) % 512, 0);
    out
}

fn hostile_tar(kind: &str) -> Vec<u8> {
    let mut tar = tar_header("./", b'5', 0, "");
    match kind {
        "absolute" => tar.extend(tar_file("/etc/pyro-pwned", b"owned\n")),
        "dotdot" => tar.extend(tar_file("./../../pyro-pwned", b"owned\n")),
        // A symlink out, then a file written through it.
        "symlink" => {
            tar.extend(tar_header("./escape", b'2', 0, "/tmp"));
            tar.extend(tar_file("./escape/pyro-pwned", b"owned\n"));
        }
        "device" => tar.extend(tar_header("./disk", b'3', 0, "")),
        "sparse" => {
            tar.extend(tar_header("./holes", b'S', 512, ""));
            tar.extend(vec![0u8; 512]);
        }
        // Declares an 8 GiB file and ends.
        "bomb" => tar.extend(tar_header("./bomb", b'0', (8u64 << 30) - 1, "")),
        _ => {}
    }
    tar.extend(vec![0u8; 1024]);
    tar
}
