//! Keeps the agent's own process out of reach of the commands it runs.
//!
//! Every frame the host trusts comes from PID 1. Commands run as root in the guest; with Yama's
//! ptrace_scope at 0 any of them could PTRACE_SEIZE PID 1 (or write /proc/1/mem) and forge replies.
//! So, once at boot:
//! * ptrace_scope = 1: a process may only trace its own descendants (strace/gdb of a command's own
//!   children keep working) unless it holds CAP_SYS_PTRACE;
//! * PID 1 is non-dumpable: ptrace and /proc/1/mem need CAP_SYS_PTRACE even for another root process;
//! * kernel.modules_disabled = 1: the initramfs loaded every module the guest needs, and a module
//!   would bypass all of this;
//! * kernel.kexec_load_disabled = 1: no command can boot another kernel in place of this one (the
//!   setting cannot be turned back off);
//! and in every child before exec, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_BPF and
//! CAP_PERFMON leave the capability bounding set, so no command, shell or service (nor anything they
//! exec, setuid or not) can regain them, and none can write ptrace_scope back (Yama requires
//! CAP_SYS_PTRACE for that). Losing CAP_SYS_BOOT also refuses reboot(2) and kexec_load(2) directly.
//! CAP_SYS_ADMIN stays: mount, namespaces, unshare and the tools built on them (container builds,
//! chroots, FUSE) are ordinary dev work. It also means the CAP_BPF/CAP_PERFMON drops are narrowing,
//! not a wall: the kernel still accepts CAP_SYS_ADMIN for bpf(2) and perf_event_open(2).
//! What this does not cover: root in the guest still owns the guest's disk, console and memory
//! devices (and can rebind the virtio console through sysfs); the host treats everything the
//! guest writes as hostile regardless.

use std::os::raw::{c_int, c_ulong};

const PR_SET_DUMPABLE: c_int = 4;
const PR_CAPBSET_DROP: c_int = 24;
const CAP_SYS_MODULE: c_ulong = 16;
const CAP_SYS_PTRACE: c_ulong = 19;
const CAP_SYS_BOOT: c_ulong = 22;
const CAP_PERFMON: c_ulong = 38;
const CAP_BPF: c_ulong = 39;
/** Leave every spawned command's bounding set (see the module comment for why these and not others). */
const DROPPED_CAPS: [c_ulong; 5] = [CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_PERFMON, CAP_BPF];

extern "C" {
    fn prctl(option: c_int, arg2: c_ulong, arg3: c_ulong, arg4: c_ulong, arg5: c_ulong) -> c_int;
}

fn report(what: &str, r: std::io::Result<()>) {
    if let Err(e) = r {
        eprintln!("pyro-agent: {} failed: {}", what, e);
    }
}

/// Once, in PID 1, after the system is set up.
pub fn protect_agent() {
    report("yama ptrace_scope=1", std::fs::write("/proc/sys/kernel/yama/ptrace_scope", "1\n"));
    let rc = unsafe { prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        report("PR_SET_DUMPABLE", Err(std::io::Error::last_os_error()));
    }
    report("modules_disabled=1", std::fs::write("/proc/sys/kernel/modules_disabled", "1\n"));
    report("kexec_load_disabled=1", std::fs::write("/proc/sys/kernel/kexec_load_disabled", "1\n"));
}

/// In a forked child, before execve: only async-signal-safe calls (prctl is a plain syscall).
pub unsafe fn confine_child() {
    for cap in DROPPED_CAPS {
        // EINVAL on a kernel that predates a capability: nothing to drop then.
        prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    }
}
