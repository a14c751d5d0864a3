//! Running a closure inside another network namespace, on a dedicated thread so the rest
//! of the process never changes namespace. Children spawned from that thread (nft,
//! iptables-save) inherit the namespace.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening network namespace {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("entering network namespace {path}: {source}")]
    Enter { path: String, source: std::io::Error },
    #[error("the thread inspecting network namespace {0} panicked")]
    Panicked(String),
}

/// `--netns NAME|PATH`: a bare name is one of `ip netns`'s (`/run/netns/NAME`).
pub fn path_for_name(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        Path::new("/run/netns").join(name)
    }
}

/// `--netns-pid PID`.
pub fn path_for_pid(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

#[allow(unsafe_code)]
fn setns_net(f: &File) -> std::io::Result<()> {
    // SAFETY: setns on a valid fd we own; it changes only the calling thread's namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Run `f` inside the network namespace at `path` (None: this process's own), on a
/// thread of its own.
pub fn run_in<T: Send + 'static>(path: Option<&Path>, f: impl FnOnce() -> T + Send + 'static) -> Result<T, NetnsError> {
    let file = match path {
        Some(p) => Some(File::open(p).map_err(|source| NetnsError::Open { path: p.display().to_string(), source })?),
        None => None,
    };
    let shown = path.map(|p| p.display().to_string()).unwrap_or_else(|| "(own)".into());
    let shown2 = shown.clone();
    let h = std::thread::spawn(move || -> Result<T, NetnsError> {
        if let Some(file) = &file {
            setns_net(file).map_err(|source| NetnsError::Enter { path: shown2, source })?;
        }
        Ok(f())
    });
    h.join().map_err(|_| NetnsError::Panicked(shown))?
}
