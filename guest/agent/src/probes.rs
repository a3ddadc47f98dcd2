//! Readiness probes run inside the guest: TCP connect and HTTP GET (no curl needed in the image).

use crate::json::{obj, Json};
use crate::protocol::{OpError, Reply};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn timeout_arg(header: &Json) -> Duration {
    Duration::from_millis(header.get("timeout_ms").and_then(Json::as_i64).unwrap_or(1000).clamp(1, 60_000) as u64)
}

pub fn tcp(header: &Json) -> Result<Reply, OpError> {
    let host = header.get("host").and_then(Json::as_str).unwrap_or("127.0.0.1");
    let port = header.get("port").and_then(Json::as_i64).filter(|p| (1..=65535).contains(p)).ok_or_else(|| OpError::bad_request("port (1-65535) is required"))? as u16;
    let ready = connect(host, port, timeout_arg(header));
    Ok(Reply::header(obj(vec![("ready", Json::Bool(ready.is_ok())), ("detail", Json::Str(ready.err().map(|e| e.to_string()).unwrap_or_default()))])))
}

/// GET an http:// URL; 2xx and 3xx count as ready.
pub fn http(header: &Json) -> Result<Reply, OpError> {
    let url = header.get("url").and_then(Json::as_str).ok_or_else(|| OpError::bad_request("url is required"))?;
    let rest = url.strip_prefix("http://").ok_or_else(|| OpError::bad_request("only http:// URLs can be probed; use a command probe for others"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| OpError::bad_request("bad port in url"))?),
        None => (authority, 80),
    };
    let timeout = timeout_arg(header);
    let result = (|| -> std::io::Result<u16> {
        let mut stream = connect(host, port, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(stream, "GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n", path, authority)?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head)?;
        let line = String::from_utf8_lossy(&head[..n]);
        line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
    })();
    let (ready, detail) = match result {
        Ok(code) => ((200..400).contains(&code), format!("HTTP {}", code)),
        Err(e) => (false, e.to_string()),
    };
    Ok(Reply::header(obj(vec![("ready", Json::Bool(ready)), ("detail", Json::Str(detail))])))
}
