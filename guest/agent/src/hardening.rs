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
//! and in every child before exec, CAP_SYS_PTRACE and CAP_SYS_MODULE leave the capability bounding
//! set, so no command, shell or service (nor anything they exec, setuid or not) can regain them,
//! and none can write ptrace_scope back (Yama requires CAP_SYS_PTRACE for that).
//! What this does not cover: root in the guest still owns the guest's disk, console and memory
//! devices; the host treats everything the guest writes as hostile regardless.

use std::os::raw::{c_int, c_ulong};

const PR_SET_DUMPABLE: c_int = 4;
const PR_CAPBSET_DROP: c_int = 24;
const CAP_SYS_MODULE: c_ulong = 16;
const CAP_SYS_PTRACE: c_ulong = 19;

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
}

/// In a forked child, before execve: only async-signal-safe calls (prctl is a plain syscall).
pub unsafe fn confine_child() {
    prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0);
    prctl(PR_CAPBSET_DROP, CAP_SYS_MODULE, 0, 0, 0);
}
