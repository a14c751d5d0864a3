//! Entering a network namespace for inspection. setns(CLONE_NEWNET) changes only the
//! calling thread, so the work runs on a dedicated thread that ends with it; the process
//! (and its probes) stay where they were.

use crate::HostError;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// The namespace to inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsSpec {
    /// A name from `ip netns` (/run/netns/NAME) or a path to a namespace file.
    Named(String),
    /// The namespace of a process (a container's).
    Pid(u32),
}

impl NetnsSpec {
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsSpec::Named(n) if n.contains('/') => PathBuf::from(n),
            NetnsSpec::Named(n) => PathBuf::from("/run/netns").join(n),
            NetnsSpec::Pid(p) => PathBuf::from(format!("/proc/{p}/ns/net")),
        }
    }
    pub fn label(&self) -> String {
        match self {
            NetnsSpec::Named(n) => n.clone(),
            NetnsSpec::Pid(p) => format!("pid:{p}"),
        }
    }
}

/// Validate a `--netns` name: a path, or an `ip netns` name without path tricks.
pub fn check_name(n: &str) -> Result<(), String> {
    if n.is_empty() {
        return Err("--netns: empty name".into());
    }
    if !n.contains('/') && (n == "." || n == ".." || n.chars().any(|c| c.is_control())) {
        return Err(format!("--netns {n:?}: not a namespace name"));
    }
    Ok(())
}

/// Check that `spec` names a network namespace this process can open (bad input otherwise:
/// a missing path, a regular file such as /etc/passwd, another kind of namespace).
pub fn check_spec(spec: &NetnsSpec) -> Result<(), String> {
    let path = spec.path();
    let what = match spec {
        NetnsSpec::Pid(p) => format!("--netns-pid {p}"),
        NetnsSpec::Named(n) => format!("--netns {n}"),
    };
    // O_NONBLOCK: a FIFO given as the path cannot hang the open.
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| format!("{what}: cannot open {}: {}", path.display(), conndoc_files::os_error_text(&e)))?;
    match ns_type(&f) {
        Ok(t) if t == libc::CLONE_NEWNET => Ok(()),
        Ok(_) => Err(format!("{what}: {} is a namespace, but not a network namespace", path.display())),
        Err(_) => Err(format!("{what}: {} is not a network namespace file", path.display())),
    }
}

/// ioctl(NS_GET_NSTYPE): the CLONE_NEW* type of a namespace file; ENOTTY for other files.
#[allow(unsafe_code)]
fn ns_type(f: &File) -> std::io::Result<libc::c_int> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3), linux/nsfs.h
                                                 // SAFETY: the descriptor stays open for the call (borrowed from `f`); NS_GET_NSTYPE takes
                                                 // no argument and returns the type as the result.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[allow(unsafe_code)]
pub(crate) fn setns_net(f: &File) -> std::io::Result<()> {
    // SAFETY: setns takes a file descriptor that stays open for the call (borrowed from
    // `f`) and a constant namespace type; it changes only the calling thread's namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Run `f` on a new thread inside the namespace. Inside `f`, read per-namespace files
/// through /proc/thread-self/net (not /proc/self/net) and open netlink sockets anew.
pub fn run_in<T: Send>(spec: &NetnsSpec, f: impl FnOnce() -> T + Send) -> Result<T, HostError> {
    let path = spec.path();
    let ns_err = |source| HostError::Netns { ns: spec.label(), source };
    let file = File::open(&path).map_err(ns_err)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns_net(&file)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("inspection thread panicked")))
    })
    .map_err(ns_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(NetnsSpec::Named("lab1".into()).path(), PathBuf::from("/run/netns/lab1"));
        assert_eq!(NetnsSpec::Named("/proc/1/ns/net".into()).path(), PathBuf::from("/proc/1/ns/net"));
        assert_eq!(NetnsSpec::Pid(42).path(), PathBuf::from("/proc/42/ns/net"));
        assert!(check_name("..").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("lab-1").is_ok());
    }

    #[test]
    fn missing_namespace_is_an_error() {
        let e = run_in(&NetnsSpec::Named("conndoc-no-such-ns".into()), || 1).unwrap_err();
        assert!(e.to_string().contains("conndoc-no-such-ns"), "{e}");
    }

    #[test]
    fn entering_our_own_namespace_by_pid() {
        // Joining the namespace we are already in needs CAP_SYS_ADMIN; skip otherwise.
        let me = std::process::id();
        let mine = crate::procs::current_netns();
        match run_in(&NetnsSpec::Pid(me), crate::procs::current_netns) {
            Ok(inner) => assert_eq!(inner, mine),
            Err(e) => assert!(e.to_string().contains("ermission"), "{e}"),
        }
    }
}
