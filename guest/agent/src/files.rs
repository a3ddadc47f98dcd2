//! File operations, so the host never has to quote paths or contents through a shell.

use crate::json::{obj, s, Json};
use crate::protocol::{OpError, Reply};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

const DEFAULT_MAX_READ: i64 = 1 << 20;
const DEFAULT_MAX_ENTRIES: i64 = 10_000;

fn path_arg<'a>(header: &'a Json) -> Result<&'a str, OpError> {
    let p = header.get("path").and_then(Json::as_str).ok_or_else(|| OpError::bad_request("path (string) is required"))?;
    if !p.starts_with('/') {
        return Err(OpError::bad_request("path must be absolute"));
    }
    Ok(p)
}

fn io_error(path: &str, e: std::io::Error) -> OpError {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => "not_found",
        std::io::ErrorKind::PermissionDenied => "permission_denied",
        std::io::ErrorKind::AlreadyExists => "already_exists",
        _ => match e.raw_os_error() {
            Some(21) => "is_a_directory",
            Some(20) => "not_a_directory",
            Some(28) => "no_space",
            _ => "io_error",
        },
    };
    OpError::new(code, &format!("{}: {}", path, e))
}

fn kind_of(ft: &fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "file"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "char_device"
    } else if ft.is_block_device() {
        "block_device"
    } else {
        "other"
    }
}

fn describe(path: &str, meta: &fs::Metadata) -> Json {
    let ft = meta.file_type();
    let mut pairs = vec![
        ("path", s(path)),
        ("type", s(kind_of(&ft))),
        ("size", Json::Int(meta.len() as i64)),
        ("mode", Json::Int((meta.permissions().mode() & 0o7777) as i64)),
        ("mtime_ms", Json::Int(meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000)),
    ];
    if ft.is_symlink() {
        let target = fs::read_link(path).map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
        pairs.push(("target", Json::Str(target)));
    }
    obj(pairs)
}

pub fn stat(header: &Json) -> Result<Reply, OpError> {
    let path = path_arg(header)?;
    let meta = fs::symlink_metadata(path).map_err(|e| io_error(path, e))?;
    Ok(Reply::header(describe(path, &meta)))
}

pub fn read(header: &Json) -> Result<Reply, OpError> {
    let path = path_arg(header)?;
    let offset = header.get("offset").and_then(Json::as_i64).unwrap_or(0).max(0) as u64;
    let max = header.get("max_bytes").and_then(Json::as_i64).unwrap_or(DEFAULT_MAX_READ).max(0) as u64;
    let mut f = fs::File::open(path).map_err(|e| io_error(path, e))?;
    let meta = f.metadata().map_err(|e| io_error(path, e))?;
    if meta.is_dir() {
        return Err(OpError::new("is_a_directory", &format!("{} is a directory", path)));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| io_error(path, e))?;
    let mut data = Vec::new();
    f.take(max).read_to_end(&mut data).map_err(|e| io_error(path, e))?;
    let size = meta.len();
    let truncated = offset + (data.len() as u64) < size;
    Ok(Reply {
        header: obj(vec![
            ("size", Json::Int(size as i64)),
            ("offset", Json::Int(offset as i64)),
            ("truncated", Json::Bool(truncated)),
        ]),
        payload: data,
    })
}

/// Writes via a temp file and rename, so a reader never sees half a file.
pub fn write(header: &Json, data: Vec<u8>) -> Result<Reply, OpError> {
    let path = path_arg(header)?;
    let mode = header.get("mode").and_then(Json::as_i64).unwrap_or(0o644) as u32 & 0o7777;
    let append = header.get("append").and_then(Json::as_bool).unwrap_or(false);
    let target = Path::new(path);
    let parent = target.parent().ok_or_else(|| OpError::bad_request("cannot write to /"))?;
    if header.get("mkdirs").and_then(Json::as_bool).unwrap_or(true) {
        fs::create_dir_all(parent).map_err(|e| io_error(&parent.to_string_lossy(), e))?;
    }
    if append {
        let mut f = fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| io_error(path, e))?;
        f.write_all(&data).map_err(|e| io_error(path, e))?;
    } else {
        if fs::symlink_metadata(path).map(|m| m.is_dir()).unwrap_or(false) {
            return Err(OpError::new("is_a_directory", &format!("{} is a directory", path)));
        }
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = parent.join(format!(".{}.pyro-{}.tmp", name, std::process::id() as u64 ^ now_nanos()));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(io_error(path, e));
        }
    }
    Ok(Reply::header(obj(vec![("path", s(path)), ("bytes", Json::Int(data.len() as i64))])))
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub fn list(header: &Json) -> Result<Reply, OpError> {
    let path = path_arg(header)?;
    let recursive = header.get("recursive").and_then(Json::as_bool).unwrap_or(false);
    let max = header.get("max_entries").and_then(Json::as_i64).unwrap_or(DEFAULT_MAX_ENTRIES).max(1) as usize;
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    if !meta.is_dir() {
        return Err(OpError::new("not_a_directory", &format!("{} is not a directory", path)));
    }
    let mut entries = Vec::new();
    let mut truncated = false;
    let mut stack = vec![path.trim_end_matches('/').to_string()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<String> = match fs::read_dir(if dir.is_empty() { "/" } else { &dir }) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(e) if dir == path.trim_end_matches('/') => return Err(io_error(path, e)),
            Err(_) => continue, // an unreadable subdirectory does not fail the listing
        };
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            if entries.len() >= max {
                truncated = true;
                break;
            }
            let full = format!("{}/{}", dir, name);
            if let Ok(m) = fs::symlink_metadata(&full) {
                if recursive && m.is_dir() {
                    subdirs.push(full.clone());
                }
                entries.push(describe(&full, &m));
            }
        }
        if truncated {
            break;
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(Reply::header(obj(vec![("entries", Json::Array(entries)), ("truncated", Json::Bool(truncated))])))
}

pub fn mkdir(header: &Json) -> Result<Reply, OpError> {
    let path = path_arg(header)?;
    fs::create_dir_all(path).map_err(|e| io_error(path, e))?;
    Ok(Reply::header(obj(vec![("path", s(path))])))
}

pub fn remove(header: &Json) -> Result<Reply, OpError> {
    let path = path_arg(header)?;
    let recursive = header.get("recursive").and_then(Json::as_bool).unwrap_or(false);
    let meta = fs::symlink_metadata(path).map_err(|e| io_error(path, e))?;
    let result = if meta.is_dir() {
        if recursive {
            fs::remove_dir_all(path)
        } else {
            fs::remove_dir(path)
        }
    } else {
        fs::remove_file(path)
    };
    result.map_err(|e| io_error(path, e))?;
    Ok(Reply::header(obj(vec![("path", s(path))])))
}
