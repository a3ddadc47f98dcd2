//! PID 1 duties: the pseudo filesystems, hostname, loopback, and finding our virtio-serial port.

use crate::sys::{self, MS_NODEV, MS_NOEXEC, MS_NOSUID};
use std::fs;

pub const PORT_NAME: &str = "org.pyro.agent";

fn mounted_targets() -> Vec<String> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

pub fn setup_system() {
    if !std::path::Path::new("/proc/self").exists() {
        let _ = fs::create_dir_all("/proc");
        report("mount /proc", sys::mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, ""));
    }
    let have = mounted_targets();
    let want: [(&str, &str, &str, u64, &str, u32); 7] = [
        ("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "", 0o555),
        ("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", 0o755),
        ("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666", 0o755),
        ("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 0o1777),
        ("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", 0o755),
        ("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 0o1777),
        ("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, "", 0o755),
    ];
    for (src, target, fstype, flags, data, _mode) in want.iter() {
        if have.iter().any(|m| m == target) {
            continue;
        }
        let _ = fs::create_dir_all(target);
        report(&format!("mount {}", target), sys::mount_fs(src, target, fstype, *flags as _, data));
    }
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    let _ = std::os::unix::fs::symlink("/dev/pts/ptmx", "/dev/ptmx");
    let hostname = cmdline_value("pyro.hostname").unwrap_or_else(|| "pyro".to_string());
    report("sethostname", sys::set_hostname(&hostname));
    let _ = fs::write("/etc/hostname", format!("{}\n", hostname));
    report("loopback up", sys::interface_up("lo"));
    if cmdline_value("pyro.net").as_deref() == Some("1") {
        setup_user_network();
    }
    for dir in ["/workspace"] {
        let _ = fs::create_dir_all(dir);
    }
}

/// QEMU user-mode networking (slirp) always hands out 10.0.2.15/24, gateway .2, DNS .3.
fn setup_user_network() {
    for _ in 0..500 {
        if std::path::Path::new("/sys/class/net/eth0").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    report("eth0 setup", sys::configure_ipv4("eth0", [10, 0, 2, 15], [255, 255, 255, 0], [10, 0, 2, 2]));
    let _ = fs::remove_file("/etc/resolv.conf"); // may be a dangling symlink in some images
    report("resolv.conf", fs::write("/etc/resolv.conf", "nameserver 10.0.2.3\n"));
}

fn report(what: &str, r: std::io::Result<()>) {
    if let Err(e) = r {
        eprintln!("pyro-agent: {} failed: {}", what, e);
    }
}

pub fn cmdline_value(key: &str) -> Option<String> {
    let cmdline = fs::read_to_string("/proc/cmdline").ok()?;
    let prefix = format!("{}=", key);
    cmdline.split_whitespace().find_map(|w| w.strip_prefix(prefix.as_str()).map(str::to_string))
}

pub fn uptime_ms() -> i64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .map(|secs| (secs * 1000.0) as i64)
        .unwrap_or(0)
}

/// The device node of our named virtio-serial port (no udev, so scan sysfs: runtime-facts G6).
pub fn find_port() -> Option<String> {
    let entries = fs::read_dir("/sys/class/virtio-ports").ok()?;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim() == PORT_NAME {
            return Some(format!("/dev/{}", entry.file_name().to_string_lossy()));
        }
    }
    None
}
