//! `file.extract`: unpacks a tar (staged on the guest's disk by the host) into a directory, every
//! entry created beneath that directory with the same resolver as the file tools.
//!
//! GNU tar cannot do this: it follows symlinks already present in the destination (a guest that
//! plants `src -> /etc` would have `sync push` write into /etc). Here each entry's parent is opened
//! beneath the destination, files replace (never write through) whatever link sits at their name
//! (a regular file with no other name is rewritten in place: overwrite_in_place), and a link that
//! leads out of the destination fails the whole extraction with a clear error.
//! The host has already validated the archive (archive-safety.ts); this reader still trusts nothing
//! it is not given: `..` and absolute names are refused, sizes are bounded by the file itself.

use crate::beneath::{self, Beneath, O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_PATH, O_RDONLY, O_RDWR, O_WRONLY};
use crate::files::{io_error, target};
use crate::json::{obj, Json};
use crate::protocol::{OpError, Reply};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const BLOCK: usize = 512;
const ENOENT: i32 = 2;
/// The guest kernel's page size: the unit the page cache reads a file in.
const PAGE: u64 = 4096;
/// Extended-header records (pax, GNU long names) are short; anything bigger is not a name.
const MAX_META_BYTES: u64 = 1 << 20;

#[derive(Debug, PartialEq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Other(u8),
}

#[derive(Debug)]
pub struct Entry {
    pub path: String,
    pub link: String,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
}

fn field_str(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Octal, or GNU base-256 (high bit set) for big values.
fn field_num(raw: &[u8]) -> io::Result<u64> {
    if raw.first().map_or(false, |b| b & 0x80 != 0) {
        let mut v: u64 = (raw[0] & 0x7f) as u64;
        for b in &raw[1..] {
            v = v.checked_mul(256).and_then(|v| v.checked_add(*b as u64)).ok_or_else(|| bad("number too large"))?;
        }
        return Ok(v);
    }
    let text = field_str(raw);
    let t = text.trim_matches(|c: char| c == ' ' || c == '\0');
    if t.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(t, 8).map_err(|_| bad("malformed number in a tar header"))
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn read_block(r: &mut dyn Read, buf: &mut [u8; BLOCK]) -> io::Result<bool> {
    let mut got = 0;
    while got < BLOCK {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(bad("the archive ends inside a header")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn skip_padding(r: &mut dyn Read, size: u64) -> io::Result<()> {
    let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    io::copy(&mut r.take(pad), &mut io::sink())?;
    Ok(())
}

fn read_meta(r: &mut dyn Read, size: u64) -> io::Result<Vec<u8>> {
    if size > MAX_META_BYTES {
        return Err(bad("an extended tar header is too large"));
    }
    let mut data = Vec::new();
    r.take(size).read_to_end(&mut data)?;
    if (data.len() as u64) < size {
        return Err(bad("the archive ends inside an extended header"));
    }
    skip_padding(r, size)?;
    Ok(data)
}

/// pax records: "<len> <key>=<value>\n".
fn pax_records(data: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(space) = rest.iter().position(|b| *b == b' ') {
        let len: usize = match std::str::from_utf8(&rest[..space]).ok().and_then(|t| t.parse().ok()) {
            Some(l) if l > space + 1 && l <= rest.len() => l,
            _ => break,
        };
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|b| *b == b'=') {
            out.push((String::from_utf8_lossy(&record[..eq]).into_owned(), String::from_utf8_lossy(&record[eq + 1..]).into_owned()));
        }
        rest = &rest[len..];
    }
    out
}

/// Reads the next real entry's header (pax and GNU long-name headers folded in); None at the end.
pub fn next_entry(r: &mut dyn Read) -> io::Result<Option<Entry>> {
    let mut long_path: Option<String> = None;
    let mut long_link: Option<String> = None;
    let mut block = [0u8; BLOCK];
    loop {
        if !read_block(r, &mut block)? || block.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let stored = field_num(&block[148..156])?;
        let sum: u64 = block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { b' ' as u64 } else { *b as u64 }).sum();
        if stored != sum {
            return Err(bad("a tar header checksum does not match"));
        }
        let size = field_num(&block[124..136])?;
        let typeflag = block[156];
        match typeflag {
            b'x' => {
                for (k, v) in pax_records(&read_meta(r, size)?) {
                    match k.as_str() {
                        "path" => long_path = Some(v),
                        "linkpath" => long_link = Some(v),
                        _ => {}
                    }
                }
                continue;
            }
            b'g' => {
                read_meta(r, size)?;
                continue;
            }
            b'L' => {
                long_path = Some(field_str(&read_meta(r, size)?));
                continue;
            }
            b'K' => {
                long_link = Some(field_str(&read_meta(r, size)?));
                continue;
            }
            _ => {}
        }
        let mut path = field_str(&block[0..100]);
        if &block[257..262] == b"ustar" {
            let prefix = field_str(&block[345..500]);
            if !prefix.is_empty() {
                path = format!("{}/{}", prefix, path);
            }
        }
        let kind = match typeflag {
            b'0' | 0 | b'7' => Kind::File,
            b'5' => Kind::Dir,
            b'2' => Kind::Symlink,
            b'1' => Kind::Hardlink,
            other => Kind::Other(other),
        };
        return Ok(Some(Entry {
            path: long_path.unwrap_or(path),
            link: long_link.unwrap_or_else(|| field_str(&block[157..257])),
            size: if matches!(kind, Kind::File) { size } else { 0 },
            kind,
            mode: field_num(&block[100..108])? as u32 & 0o7777,
            mtime: field_num(&block[136..148])? as i64,
        }));
    }
}

fn relative(name: &str) -> io::Result<String> {
    if name.starts_with('/') {
        return Err(bad(&format!("{}: absolute names are not extracted", name)));
    }
    let parts = beneath::components(name).map_err(|_| bad(&format!("{}: '..' is not extracted", name)))?;
    Ok(parts.join("/"))
}

/// Makes room for a non-directory at `dir/name`: whatever non-directory is there goes.
fn clear_slot(dir: &File, name: &str) -> io::Result<()> {
    match beneath::open_child(dir, name, O_PATH, 0) {
        Ok(node) if node.metadata()?.is_dir() => Err(io::Error::from_raw_os_error(21)),
        Ok(_) => beneath::unlink_in(dir, name, false),
        Err(_) => Ok(()),
    }
}

/// Directories this extraction already made (or found) beneath its root. Each entry's parent is
/// still opened beneath the root (parent_of); the set only spares the mkdir walk per entry, which
/// under TCG cost more than the file itself.
type MadeDirs = HashSet<String>;

/// Bytes of a file moved per write: one write for most files (std's io::copy moves 8 KiB at a time,
/// a syscall and a page-cache pass each under TCG).
const COPY_BYTES: usize = 256 * 1024;

/// What one extraction carries from entry to entry.
struct Extraction {
    made: MadeDirs,
    /// The directory the last file went into, opened beneath the root: an archive lists a
    /// directory's files together, and reopening it for each cost a path walk per file. Only
    /// directories are kept, which an extraction never removes or replaces (a file, link or
    /// hardlink entry at a directory's name fails with EISDIR).
    last_dir: Option<(String, File)>,
    buf: Vec<u8>,
}

impl Extraction {
    fn new() -> Extraction {
        Extraction { made: MadeDirs::new(), last_dir: None, buf: vec![0; COPY_BYTES] }
    }

    /// `parent` ("" = the root) opened beneath `root`, from the last file's when it is the same.
    fn dir(&mut self, root: &Beneath, parent: &str) -> io::Result<&File> {
        if self.last_dir.as_ref().map(|(p, _)| p.as_str()) != Some(parent) {
            self.last_dir = Some((parent.to_string(), root.open_at(parent, O_PATH | O_DIRECTORY, 0)?));
        }
        Ok(&self.last_dir.as_ref().unwrap().1)
    }
}

/// Copies all of `data` into `f` through `buf`; returns the bytes copied.
fn copy_through(data: &mut dyn Read, f: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match data.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        f.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn ensure_dirs(root: &Beneath, made: &mut MadeDirs, rel: &str) -> io::Result<()> {
    if rel.is_empty() || made.contains(rel) {
        return Ok(());
    }
    root.create_dirs(rel)?;
    made.insert(rel.to_string());
    Ok(())
}

/// Puts a file at `dir/name`: over the file already there when that is safe and cheaper
/// (overwrite_in_place, with the file open_ahead opened, if it did), else as a new file
/// (write_new_file). Returns the bytes written.
fn put_file(dir: &File, name: &str, opened_ahead: Option<File>, data: &mut dyn Read, mode: u32, mtime_secs: i64, buf: &mut [u8]) -> io::Result<u64> {
    match overwrite_in_place(dir, name, opened_ahead, data, mode, mtime_secs, buf)? {
        Some(written) => Ok(written),
        None => write_new_file(dir, name, data, mode, mtime_secs, buf),
    }
}

/**
 * Writes the new bytes into the regular file already at `dir/name`, when it has no other name:
 * under TCG, unlinking a file and creating another cost ~5x rewriting one in place (freeing and
 * allocating its inode and blocks, and their writeback, is ext4 work emulated instruction by
 * instruction). None (nothing touched, nothing read from `data`) when the name is anything else: a
 * symlink (never opened: O_NOFOLLOW, and the lstat before it), a directory, a device or FIFO (never
 * opened: the lstat before it), a file with other names (which must keep the old bytes, as GNU
 * tar leaves them), or a file that cannot be opened for writing (busy, immutable): write_new_file
 * decides those as before. The name is opened beneath `dir` (here, or earlier by open_ahead) and
 * checked again once open, here, so a swap between the look and the open is caught, not written
 * through.
 *
 * The file keeps its blocks: only what the new bytes no longer reach is cut off, after the write.
 * The new last page is written in part, so the kernel first reads what the old file holds there.
 * Cutting the old file at that page instead (so nothing needs reading) cost more than the read
 * under TCG: the freed block is allocated again at writeback, and the flush that ends a push took
 * ~3x as long. The read is started early instead, for many files at once (open_ahead).
 */
fn overwrite_in_place(dir: &File, name: &str, opened_ahead: Option<File>, data: &mut dyn Read, mode: u32, mtime_secs: i64, buf: &mut [u8]) -> io::Result<Option<u64>> {
    let seen = match beneath::stat_child(dir, name) {
        Ok(st) if st.is_file() && st.nlink == 1 => st,
        _ => return Ok(None),
    };
    let mut f = match opened_ahead.map_or_else(|| beneath::open_child(dir, name, O_RDWR | O_NONBLOCK, 0), Ok) {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    let opened = f.metadata()?;
    if !opened.is_file() || opened.nlink() != 1 || (opened.dev(), opened.ino()) != (seen.dev, seen.ino) {
        return Ok(None);
    }
    let written = copy_through(data, &mut f, buf)?;
    if opened.len() > written {
        f.set_len(written)?;
    }
    // A write drops setuid/setgid; otherwise a mode already right needs no change (one journal
    // transaction less per file).
    let old_mode = opened.mode() & 0o7777;
    if old_mode != mode || old_mode & 0o6000 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    crate::sys::set_file_times(&f, mtime_secs)?;
    Ok(Some(written))
}

/**
 * Puts a new file at `dir/name` as GNU tar does: whatever non-directory is there is unlinked (a link is
 * replaced, never written through; a hardlink's other names keep the old bytes), then the file is
 * created with O_EXCL. Not a temp file and a rename: under TCG, replacing an existing name by rename
 * cost ~3x a create (ext4's auto_da_alloc starts writeback of each renamed file at once), and an
 * unpack is not atomic per archive anyway. A directory at `name` fails with EISDIR.
 */
fn write_new_file(dir: &File, name: &str, data: &mut dyn Read, mode: u32, mtime_secs: i64, buf: &mut [u8]) -> io::Result<u64> {
    match beneath::unlink_in(dir, name, false) {
        Err(e) if e.raw_os_error() != Some(ENOENT) => return Err(e),
        _ => {}
    }
    let mut f = beneath::open_child(dir, name, O_WRONLY | O_CREAT | O_EXCL, mode)?;
    let n = copy_through(data, &mut f, buf)?;
    // Created under the agent's umask: set exactly what the archive says.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    crate::sys::set_file_times(&f, mtime_secs)?;
    Ok(n)
}

fn extract_entry(root: &Beneath, x: &mut Extraction, entry: &Entry, data: &mut dyn Read, opened_ahead: Option<File>) -> io::Result<()> {
    let rel = relative(&entry.path)?;
    if rel.is_empty() {
        return Ok(()); // "./" itself
    }
    let parent = rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
    ensure_dirs(root, &mut x.made, parent)?;
    match entry.kind {
        Kind::Dir => {
            ensure_dirs(root, &mut x.made, &rel)?;
            let d = root.open_at(&rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0)?;
            d.set_permissions(std::fs::Permissions::from_mode(entry.mode))?;
        }
        Kind::File => {
            let name = rel.rsplit('/').next().unwrap_or("");
            let mut buf = std::mem::take(&mut x.buf);
            let written = put_file(x.dir(root, parent)?, name, opened_ahead, &mut data.take(entry.size), entry.mode, entry.mtime, &mut buf);
            x.buf = buf;
            let written = written?;
            if written < entry.size {
                return Err(bad(&format!("{}: the archive ends inside this file", entry.path)));
            }
        }
        Kind::Symlink => {
            let (dir, name) = root.parent_of(&rel)?;
            clear_slot(&dir, name)?;
            beneath::symlink_in(&dir, name, &entry.link)?;
        }
        Kind::Hardlink => {
            let source = root.open_at(&relative(&entry.link)?, O_PATH | O_NOFOLLOW, 0)?;
            if source.metadata()?.is_dir() {
                return Err(bad(&format!("{}: a hard link to a directory", entry.path)));
            }
            let (dir, name) = root.parent_of(&rel)?;
            clear_slot(&dir, name)?;
            beneath::hardlink_in(&source, &dir, name)?;
        }
        Kind::Other(t) => return Err(bad(&format!("{}: tar entry type '{}' is not extracted", entry.path, t as char))),
    }
    Ok(())
}

/// Reads every entry from `r` and creates it beneath `root`; returns the number of entries.
pub fn extract_into(root: &Beneath, r: &mut dyn Read) -> Result<i64, (String, io::Error)> {
    let mut count = 0;
    let mut x = Extraction::new();
    while let Some(entry) = next_entry(r).map_err(|e| (String::new(), e))? {
        let mut body = r.take(entry.size);
        extract_entry(root, &mut x, &entry, &mut body, None).map_err(|e| (entry.path.clone(), e))?;
        // Whatever the entry did not consume (a refused or short write) is skipped.
        io::copy(&mut body, &mut io::sink()).map_err(|e| (entry.path.clone(), e))?;
        skip_padding(r, entry.size).map_err(|e| (entry.path.clone(), e))?;
        count += 1;
    }
    Ok(count)
}

/// Files opened ahead of their writes at a time (open_ahead): the descriptors a batch holds at once.
const OPEN_AHEAD: usize = 128;

/// What extract_into does for a tar held whole in memory (a tree.unpack batch): its headers are
/// read first, so that the files it writes over can be opened, and their old pages read, ahead of
/// the writes (open_ahead). A malformed header fails the batch before anything of it is written.
pub fn extract_batch(root: &Beneath, tar: &[u8]) -> Result<i64, (String, io::Error)> {
    let mut rest = tar;
    let mut entries = Vec::new();
    while let Some(entry) = next_entry(&mut rest).map_err(|e| (String::new(), e))? {
        // A body the archive cuts short stays short: extract_entry reports it, as extract_into does.
        let body = &rest[..rest.len().min(entry.size as usize)];
        rest = &rest[body.len()..];
        skip_padding(&mut rest, entry.size).map_err(|e| (entry.path.clone(), e))?;
        entries.push((entry, body));
    }
    let mut x = Extraction::new();
    for window in entries.chunks(OPEN_AHEAD) {
        let opened = open_ahead(root, &mut x, window);
        for ((entry, body), file) in window.iter().zip(opened) {
            extract_entry(root, &mut x, entry, &mut &body[..], file).map_err(|e| (entry.path.clone(), e))?;
        }
    }
    Ok(entries.len() as i64)
}

/**
 * Opens, for each file entry of `window`, the old file that overwrite_in_place will write over (a
 * plain file with one name: looked at first, so that links, FIFOs and devices are never opened),
 * and starts reading what it holds under the new last page, which is written in part, so the
 * kernel must read those bytes first. Asked for together, the reads are in flight while the files
 * before them are written; one at a time, each would stall the unpack for a disk round trip. None
 * where there is no such file (yet), or its parent does not resolve beneath the root: the write
 * decides. overwrite_in_place checks the name against the descriptor again when it writes.
 */
fn open_ahead(root: &Beneath, x: &mut Extraction, window: &[(Entry, &[u8])]) -> Vec<Option<File>> {
    let mut opened = Vec::with_capacity(window.len());
    for (entry, _) in window {
        opened.push(if entry.kind == Kind::File { open_lone_file_ahead(root, x, entry) } else { None });
    }
    opened
}

fn open_lone_file_ahead(root: &Beneath, x: &mut Extraction, entry: &Entry) -> Option<File> {
    let rel = relative(&entry.path).ok()?;
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
    let dir = x.dir(root, parent).ok()?;
    let old = beneath::stat_child(dir, name).ok().filter(|st| st.is_file() && st.nlink == 1)?;
    let f = beneath::open_child(dir, name, O_RDWR | O_NONBLOCK, 0).ok()?;
    let last_page = entry.size & !(PAGE - 1);
    if entry.size != last_page && old.size > last_page {
        crate::sys::read_ahead(&f, last_page, PAGE);
    }
    Some(f)
}

/// `file.extract` { archive: staged tar path, path: destination directory (created) }.
pub fn extract(header: &Json) -> Result<Reply, OpError> {
    let archive = header.get("archive").and_then(Json::as_str).ok_or_else(|| OpError::bad_request("archive (string) is required"))?;
    let src = target(archive)?;
    let file = src.root.open_at(&src.rel, O_RDONLY, 0).map_err(|e| io_error(archive, e))?;
    extract_to(header, |root| extract_into(root, &mut BufReader::with_capacity(256 * 1024, file)))
}

/// `tree.unpack` { path: destination directory (created) }, the tar itself as the payload: what
/// `file.extract` does without staging the archive on the guest's disk first. The host sends a big
/// tree as several such requests, each a whole tar of whole entries.
pub fn unpack(header: &Json, payload: Vec<u8>) -> Result<Reply, OpError> {
    extract_to(header, |root| extract_batch(root, &payload))
}

fn extract_to(header: &Json, extract: impl FnOnce(&Beneath) -> Result<i64, (String, io::Error)>) -> Result<Reply, OpError> {
    let dest = header.get("path").and_then(Json::as_str).ok_or_else(|| OpError::bad_request("path (string) is required"))?;
    let t = target(dest)?;
    t.root.create_dirs(&t.rel).map_err(|e| io_error(dest, e))?;
    let dir = t.root.open_at(&t.rel, O_PATH | O_DIRECTORY, 0).map_err(|e| io_error(dest, e))?;
    let root = Beneath::narrowed(dir);
    let count = extract(&root).map_err(|(entry, e)| {
        let entry = relative(&entry).unwrap_or(entry);
        let at = if entry.is_empty() { dest.to_string() } else { format!("{}/{}", dest.trim_end_matches('/'), entry) };
        if beneath::is_escape(&e) && e.raw_os_error() == Some(18) {
            OpError::new("outside_workspace", &format!("extracting into {} stopped at {}: it leads outside {} through a symbolic link (entries before it were written, none after)", dest, at, dest))
        } else {
            let mut err = io_error(&at, e);
            err.message = format!("extracting into {} failed: {}", dest, err.message);
            err
        }
    })?;
    Ok(Reply::header(obj(vec![("entries", Json::Int(count))])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    fn tar_of(dir: &Path, format: &str) -> Vec<u8> {
        let out = Command::new("tar").args(["-c", "-f", "-", &format!("--format={}", format), "-C"]).arg(dir).arg(".").output().unwrap();
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn extracts_files_dirs_links_and_long_names_and_refuses_planted_links() {
        let base = std::env::temp_dir().join(format!("pyro-tar-{}", std::process::id()));
        let src = base.join("src");
        let long = "d".repeat(120);
        std::fs::create_dir_all(src.join("sub").join(&long)).unwrap();
        std::fs::write(src.join("sub/a.txt"), "alpha").unwrap();
        std::fs::write(src.join("sub").join(&long).join("f"), "deep").unwrap();
        std::fs::write(src.join("sub").join(&long).join("n".repeat(250)), "longest name").unwrap();
        std::fs::set_permissions(src.join("sub/a.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("a.txt", src.join("sub/link")).unwrap();
        std::fs::hard_link(src.join("sub/a.txt"), src.join("hard")).unwrap();
        for (format, batch) in [("gnu", false), ("pax", false), ("gnu", true), ("pax", true), ("ustar", true), ("ustar", false)] {
            if format == "ustar" && src.join("sub").join(&long).exists() {
                std::fs::remove_dir_all(src.join("sub").join(&long)).unwrap();
            }
            let dest = base.join(format!("dest-{}-{}", format, batch));
            std::fs::create_dir_all(&dest).unwrap();
            let root = Beneath::open(dest.to_str().unwrap()).unwrap();
            let tar = tar_of(&src, format);
            let n = if batch { extract_batch(&root, &tar) } else { extract_into(&root, &mut tar.as_slice()) }.unwrap();
            assert!(n >= 5, "{}: {} entries", format, n);
            assert_eq!(std::fs::read_to_string(dest.join("sub/a.txt")).unwrap(), "alpha");
            assert_eq!(std::fs::metadata(dest.join("sub/a.txt")).unwrap().permissions().mode() & 0o777, 0o755);
            assert_eq!(std::fs::read_link(dest.join("sub/link")).unwrap().to_str().unwrap(), "a.txt");
            assert_eq!(std::fs::read_to_string(dest.join("hard")).unwrap(), "alpha");
            if format != "ustar" {
                assert_eq!(std::fs::read_to_string(dest.join("sub").join(&long).join("f")).unwrap(), "deep");
                assert_eq!(std::fs::read_to_string(dest.join("sub").join(&long).join("n".repeat(250))).unwrap(), "longest name");
            }
        }
        // The guest planted `sub -> outside`: extracting sub/a.txt must not write through it.
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let trap = base.join("trap");
        std::fs::create_dir_all(&trap).unwrap();
        std::os::unix::fs::symlink(&outside, trap.join("sub")).unwrap();
        let root = Beneath::open(trap.to_str().unwrap()).unwrap();
        let (entry, e) = extract_into(&root, &mut tar_of(&src, "gnu").as_slice()).unwrap_err();
        assert!(beneath::is_escape(&e), "{}: {}", entry, e);
        let (entry, e) = extract_batch(&root, &tar_of(&src, "gnu")).unwrap_err();
        assert!(beneath::is_escape(&e), "{}: {}", entry, e);
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written outside");
        // A planted link at a file's own name is replaced, not written through.
        let trap2 = base.join("trap2");
        std::fs::create_dir_all(trap2.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), trap2.join("sub/a.txt")).unwrap();
        let root = Beneath::open(trap2.to_str().unwrap()).unwrap();
        extract_batch(&root, &tar_of(&src, "gnu")).unwrap();
        assert!(!outside.join("victim").exists());
        assert_eq!(std::fs::read_to_string(trap2.join("sub/a.txt")).unwrap(), "alpha");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn unpack_replaces_names_without_writing_through_them() {
        use std::os::unix::fs::MetadataExt;
        let base = std::env::temp_dir().join(format!("pyro-unpack-{}", std::process::id()));
        let src = base.join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/a.txt"), "new bytes").unwrap();
        std::fs::write(src.join("shared"), "new shared").unwrap();
        std::fs::write(src.join("dir-in-guest"), "a file").unwrap();
        std::fs::set_permissions(src.join("sub/a.txt"), std::fs::Permissions::from_mode(0o741)).unwrap();
        crate::sys::set_file_times(&File::open(src.join("sub/a.txt")).unwrap(), 1_000_000_000).unwrap();
        // What the guest already holds: a link where a file goes, a hardlinked name, a directory.
        let dest = base.join("dest");
        let outside = base.join("outside");
        std::fs::create_dir_all(dest.join("sub")).unwrap();
        std::fs::write(&outside, "outside").unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("sub/a.txt")).unwrap();
        std::fs::write(dest.join("shared"), "old shared").unwrap();
        std::fs::hard_link(dest.join("shared"), dest.join("other-name")).unwrap();
        std::fs::create_dir_all(dest.join("dir-in-guest")).unwrap();
        let root = Beneath::open(dest.to_str().unwrap()).unwrap();
        let (entry, e) = extract_batch(&root, &tar_of(&src, "gnu")).unwrap_err();
        assert_eq!((entry.as_str(), e.raw_os_error()), ("./dir-in-guest", Some(21)), "a directory is never replaced by a file");
        std::fs::remove_dir(dest.join("dir-in-guest")).unwrap();
        extract_batch(&root, &tar_of(&src, "gnu")).unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "outside", "the planted link was replaced, not written through");
        let a = std::fs::symlink_metadata(dest.join("sub/a.txt")).unwrap();
        assert!(a.is_file());
        assert_eq!((a.mode() & 0o7777, a.mtime()), (0o741, 1_000_000_000));
        assert_eq!(std::fs::read_to_string(dest.join("sub/a.txt")).unwrap(), "new bytes");
        assert_eq!(std::fs::read_to_string(dest.join("shared")).unwrap(), "new shared");
        assert_eq!(std::fs::read_to_string(dest.join("other-name")).unwrap(), "old shared", "a hardlink's other name keeps its bytes");
        // Extracting again over its own result works (the names exist now).
        extract_batch(&root, &tar_of(&src, "gnu")).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("sub/a.txt")).unwrap(), "new bytes");
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// Drops a file's clean pages from the page cache, so the next write must cut or read them.
    fn evict(path: &Path) {
        use std::os::unix::io::AsRawFd;
        extern "C" {
            fn posix_fadvise(fd: i32, offset: i64, len: i64, advice: i32) -> i32;
        }
        let f = File::open(path).unwrap();
        f.sync_all().unwrap();
        assert_eq!(unsafe { posix_fadvise(f.as_raw_fd(), 0, 0, 4) }, 0); // POSIX_FADV_DONTNEED
    }

    #[test]
    fn rewrites_a_lone_file_in_place_and_replaces_everything_else() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let base = std::env::temp_dir().join(format!("pyro-inplace-{}", std::process::id()));
        let dest = base.join("dest");
        std::fs::create_dir_all(&dest).unwrap();
        let root = Beneath::open(dest.to_str().unwrap()).unwrap();
        let dir = root.open_at("", O_PATH | O_DIRECTORY, 0).unwrap();
        let mut buf = vec![0u8; 4096 + 3]; // smaller than some files: they take several writes
        let mut put = |name: &str, bytes: &[u8], mode: u32| put_file(&dir, name, None, &mut &bytes[..], mode, 1_200_000_000, &mut buf).unwrap();
        let ino = |name: &str| std::fs::symlink_metadata(dest.join(name)).unwrap().ino();
        let long: Vec<u8> = (0..3 * PAGE as usize + 100).map(|i| (i % 251) as u8).collect();
        let shorter: Vec<u8> = (0..PAGE as usize + 7).map(|i| (i % 13) as u8).collect();
        for evicted in [false, true] {
            // Longer over shorter, shorter over longer (the tail cut off), with the old tail page
            // cached or not: the bytes, mode and mtime are exactly the new ones, the inode the same.
            std::fs::write(dest.join("lone"), &shorter).unwrap();
            let before = ino("lone");
            for (bytes, mode) in [(&long, 0o640), (&shorter, 0o4755), (&long, 0o4755), (&Vec::new(), 0o600)] {
                if evicted {
                    evict(&dest.join("lone"));
                }
                assert_eq!(put("lone", bytes, mode), bytes.len() as u64);
                let m = std::fs::symlink_metadata(dest.join("lone")).unwrap();
                assert_eq!((&std::fs::read(dest.join("lone")).unwrap(), m.mode() & 0o7777, m.mtime(), m.ino()), (bytes, mode, 1_200_000_000, before));
            }
        }
        // A name with a second name is replaced: the other name keeps the old bytes.
        std::fs::write(dest.join("twin"), "old").unwrap();
        std::fs::hard_link(dest.join("twin"), dest.join("twin-other")).unwrap();
        let before = ino("twin");
        put("twin", b"new", 0o644);
        assert_ne!(ino("twin"), before);
        assert_eq!((std::fs::read_to_string(dest.join("twin")).unwrap(), std::fs::read_to_string(dest.join("twin-other")).unwrap()), ("new".into(), "old".into()));
        // A FIFO (never opened: opening one for writing could wait on a reader) and a symlink (never
        // followed) are replaced by the file; what the link pointed at is untouched.
        let fifo = std::ffi::CString::new(dest.join("pipe").to_str().unwrap()).unwrap();
        extern "C" {
            fn mkfifo(path: *const std::os::raw::c_char, mode: u32) -> i32;
        }
        assert_eq!(unsafe { mkfifo(fifo.as_ptr(), 0o644) }, 0);
        put("pipe", b"was a fifo", 0o644);
        assert!(std::fs::symlink_metadata(dest.join("pipe")).unwrap().file_type().is_file());
        assert!(!std::fs::symlink_metadata(dest.join("pipe")).unwrap().file_type().is_fifo());
        std::fs::write(base.join("outside"), "outside").unwrap();
        std::os::unix::fs::symlink(base.join("outside"), dest.join("link")).unwrap();
        put("link", b"was a link", 0o644);
        assert_eq!(std::fs::read_to_string(base.join("outside")).unwrap(), "outside");
        assert_eq!(std::fs::read_to_string(dest.join("link")).unwrap(), "was a link");
        assert!(std::fs::symlink_metadata(dest.join("link")).unwrap().is_file());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// Whether a file's page at `offset` is in the page cache, asked without reading it (mincore).
    fn cached(path: &Path, offset: u64) -> bool {
        use std::os::unix::io::AsRawFd;
        extern "C" {
            fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, offset: i64) -> *mut u8;
            fn munmap(addr: *mut u8, len: usize) -> i32;
            fn mincore(addr: *mut u8, len: usize, vec: *mut u8) -> i32;
        }
        let f = File::open(path).unwrap();
        let at = unsafe { mmap(std::ptr::null_mut(), PAGE as usize, 1, 1, f.as_raw_fd(), offset as i64) }; // PROT_READ, MAP_SHARED
        assert_ne!(at as isize, -1);
        let mut resident = 0u8;
        assert_eq!(unsafe { mincore(at, PAGE as usize, &mut resident) }, 0);
        unsafe { munmap(at, PAGE as usize) };
        resident & 1 == 1
    }

    /// Where on its disk a file keeps the block at `offset` (FIEMAP, after a sync), or None where the
    /// filesystem cannot say (tmpfs).
    fn disk_block(path: &Path, offset: u64) -> Option<u64> {
        use std::os::unix::io::AsRawFd;
        extern "C" {
            fn ioctl(fd: i32, req: u64, arg: *mut u8) -> i32;
        }
        const FS_IOC_FIEMAP: u64 = 0xC020_660B;
        const FIEMAP_FLAG_SYNC: u32 = 1;
        // struct fiemap (32 bytes) and one struct fiemap_extent (56 bytes).
        let mut m = [0u8; 32 + 56];
        m[0..8].copy_from_slice(&offset.to_ne_bytes());
        m[8..16].copy_from_slice(&PAGE.to_ne_bytes());
        m[16..20].copy_from_slice(&FIEMAP_FLAG_SYNC.to_ne_bytes());
        m[24..28].copy_from_slice(&1u32.to_ne_bytes());
        let f = File::open(path).unwrap();
        if unsafe { ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, m.as_mut_ptr()) } != 0 {
            return None;
        }
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 1, "one extent holds the block");
        let u64_at = |at: usize| u64::from_ne_bytes(m[at..at + 8].try_into().unwrap());
        Some(u64_at(40) + (offset - u64_at(32)))
    }

    #[test]
    fn files_written_over_are_opened_and_read_ahead_and_keep_their_blocks() {
        let base = std::env::temp_dir().join(format!("pyro-readahead-{}", std::process::id()));
        std::fs::create_dir_all(base.join("sub")).unwrap();
        let old: Vec<u8> = (0..3 * PAGE as usize - 95).map(|i| (i % 241) as u8).collect();
        let new: Vec<u8> = (0..3 * PAGE as usize - 88).map(|i| (i % 239) as u8).collect();
        for name in ["grows", "aligned", "shrinks", "twin", "target"] {
            std::fs::write(base.join("sub").join(name), &old).unwrap();
            evict(&base.join("sub").join(name));
        }
        std::fs::hard_link(base.join("sub/twin"), base.join("twin-other")).unwrap();
        std::os::unix::fs::symlink("target", base.join("sub/link")).unwrap();
        let root = Beneath::open(base.to_str().unwrap()).unwrap();
        let file = |path: &str, size: usize| Entry { path: path.into(), link: String::new(), kind: Kind::File, size: size as u64, mode: 0o644, mtime: 0 };
        let entries = [
            (file("./sub/grows", new.len()), &new[..]),
            (file("./sub/aligned", 2 * PAGE as usize), &new[..2 * PAGE as usize]),
            (file("./sub/shrinks", PAGE as usize + 9), &new[..PAGE as usize + 9]),
            (file("./sub/twin", new.len()), &new[..]),
            (file("./sub/link", new.len()), &new[..]),
            (file("./sub/absent", new.len()), &new[..]),
        ];
        let opened = open_ahead(&root, &mut Extraction::new(), &entries);
        let held: Vec<bool> = opened.iter().map(Option::is_some).collect();
        assert_eq!(held, [true, true, true, false, false, false], "only lone plain files are opened: no second name, no link followed");
        let last_page = |size: usize| size as u64 & !(PAGE - 1);
        let sub = |name: &str| base.join("sub").join(name);
        // The reads complete in the background: a page shows as cached once it has been read.
        let read_soon = |path: &Path, offset: u64| {
            for _ in 0..200 {
                if cached(path, offset) {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            false
        };
        assert!(read_soon(&sub("grows"), last_page(new.len())), "the old bytes under the new last page are read");
        assert!(read_soon(&sub("shrinks"), PAGE), "a file cut inside a page too");
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!cached(&sub("grows"), 0), "whole pages are written over, never read");
        assert!(!cached(&sub("aligned"), PAGE), "a new size on a page boundary writes no page in part");
        assert!(!cached(&sub("twin"), last_page(new.len())), "a file with other names is replaced, not read");
        assert!(!cached(&sub("target"), last_page(new.len())), "a symlink is not followed");
        // A held file is written through its descriptor only while its name still leads to it: a
        // name swapped for a link since is replaced, the link's target untouched.
        let dir = root.open_at("sub", O_PATH | O_DIRECTORY, 0).unwrap();
        let mut buf = vec![0u8; PAGE as usize];
        let mut opened = opened.into_iter();
        let (_, aligned, shrinks) = (opened.next().unwrap(), opened.next().unwrap(), opened.next().unwrap());
        let ino = |name: &str| std::fs::symlink_metadata(sub(name)).unwrap().ino();
        let before = ino("shrinks");
        assert_eq!(put_file(&dir, "shrinks", shrinks, &mut &new[..PAGE as usize + 9], 0o644, 0, &mut buf).unwrap(), PAGE + 9);
        assert_eq!((std::fs::read(sub("shrinks")).unwrap(), ino("shrinks")), (new[..PAGE as usize + 9].to_vec(), before));
        std::fs::remove_file(sub("aligned")).unwrap();
        std::os::unix::fs::symlink("target", sub("aligned")).unwrap();
        put_file(&dir, "aligned", aligned, &mut &new[..], 0o644, 0, &mut buf).unwrap();
        assert!(std::fs::symlink_metadata(sub("aligned")).unwrap().is_file());
        assert_eq!((std::fs::read(sub("aligned")).unwrap(), std::fs::read(sub("target")).unwrap()), (new.clone(), old.clone()));
        // The rewrite leaves the file's blocks where they were (nothing freed to be allocated again at
        // writeback), its old last page out of the cache or not.
        for evicted in [false, true] {
            let before = disk_block(&sub("grows"), last_page(new.len()));
            if evicted {
                evict(&sub("grows"));
            }
            assert_eq!(put_file(&dir, "grows", None, &mut &new[..], 0o644, 0, &mut buf).unwrap(), new.len() as u64);
            assert_eq!(std::fs::read(sub("grows")).unwrap(), new);
            match before {
                Some(block) => assert_eq!(disk_block(&sub("grows"), last_page(new.len())), Some(block), "the last page stays in its block"),
                None => eprintln!("{}: no FIEMAP here; block placement not checked", base.display()),
            }
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn refuses_bad_headers_and_names() {
        let mut block = [0u8; 1024];
        block[0] = b'x';
        assert!(next_entry(&mut &block[..]).is_err(), "bad checksum");
        assert!(relative("../x").is_err());
        assert!(relative("/etc/x").is_err());
        assert_eq!(relative("./a//b").unwrap(), "a/b");
        assert_eq!(pax_records(b"16 path=abc/def\n11 mtime=1\n"), vec![("path".to_string(), "abc/def".to_string()), ("mtime".to_string(), "1".to_string())]);
    }
}
