//! A cache of decoded nf_tables rulesets, keyed by network namespace and nf_tables
//! generation id.
//!
//! The kernel bumps a namespace's generation id (`NFT_MSG_GETGEN`) on every committed
//! ruleset change, so a decode made at generation G is the ruleset for as long as GETGEN
//! still answers G. The namespace is named by its cookie (`SO_NETNS_COOKIE`: unique per
//! boot, never reused, unlike the inode number) and, on disk, the boot id.
//!
//! Two levels: in this process (the watch daemon diagnoses again and again) and files under
//! `/run/conndoc/nftables/` (each CLI run is a new process). Only big rulesets are kept
//! (small ones read in a millisecond or two), never one whose sets change without a commit,
//! and one whose rules name interfaces by index is used only while those names are unchanged.
//! Every failure here is a miss, never an error.

pub mod wire;

use crate::model::Ruleset;
use crate::nfnl::decode::Provenance;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

/// Default directory of the on-disk level (tmpfs: gone at reboot).
pub const DEFAULT_DIR: &str = "/run/conndoc/nftables";
/// Kept when it holds at least this many tables, chains, sets, set elements and rules.
pub const MIN_OBJECTS: usize = 1000;
/// At most this many namespaces per level; the least recently stored go first.
pub const MAX_ENTRIES: usize = 16;
const SUFFIX: &str = ".nftcache";

/// Where a ruleset came from, when not from a dump made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLevel {
    /// This process read it before.
    Memory,
    /// A file an earlier run left under the cache directory.
    Disk,
}

/// Which levels are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub memory: bool,
    /// The on-disk level's directory; None: off.
    pub dir: Option<PathBuf>,
    /// Kept when it holds at least this many objects (see [`MIN_OBJECTS`]).
    pub min_objects: usize,
}

impl CacheConfig {
    pub fn off() -> CacheConfig {
        CacheConfig { memory: false, dir: None, min_objects: MIN_OBJECTS }
    }

    /// `CONNDOC_NO_CACHE=1` turns both levels off; `CONNDOC_CACHE_DIR` moves the files.
    /// The on-disk level is root's only.
    pub fn from_env() -> CacheConfig {
        let no = std::env::var("CONNDOC_NO_CACHE").ok();
        let dir = std::env::var_os("CONNDOC_CACHE_DIR").map(PathBuf::from);
        CacheConfig::from_vars(no.as_deref(), dir, euid() == 0)
    }

    pub fn from_vars(no_cache: Option<&str>, dir: Option<PathBuf>, root: bool) -> CacheConfig {
        if no_cache.is_some_and(|v| !v.is_empty() && v != "0") {
            return CacheConfig::off();
        }
        let dir = dir.filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
        CacheConfig { memory: true, dir: root.then_some(dir), min_objects: MIN_OBJECTS }
    }

    pub fn enabled(&self) -> bool {
        self.memory || self.dir.is_some()
    }
}

#[allow(unsafe_code)]
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `SO_NETNS_COOKIE` (Linux 5.14): the network namespace `fd` was made in.
#[allow(unsafe_code)]
pub fn netns_cookie(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let mut v: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of the sizes given; the fd is borrowed open.
    let r = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, SO_NETNS_COOKIE, (&mut v as *mut u64).cast(), &mut len)
    };
    (r == 0 && len as usize == std::mem::size_of::<u64>()).then_some(v)
}

static BOOT_ID: LazyLock<Option<String>> =
    LazyLock::new(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string()));

/// The conndoc build that writes and reads files: its version and its executable's size and
/// modification time (another build may lay the model out differently).
static BUILD: LazyLock<String> = LazyLock::new(|| {
    let exe = std::fs::metadata("/proc/self/exe").map(|m| format!("{}:{}.{}", m.size(), m.mtime(), m.mtime_nsec()));
    format!("{} f{} exe={}", env!("CARGO_PKG_VERSION"), wire::FORMAT, exe.unwrap_or_default())
});

/// One cached decode.
#[derive(Debug)]
pub struct Entry {
    pub generation: u32,
    pub ruleset: Arc<Ruleset>,
    pub ifnames: Option<Vec<(u32, String)>>,
    stored: Instant,
}

static MEMORY: LazyLock<Mutex<HashMap<u64, Arc<Entry>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn file_of(dir: &Path, cookie: u64) -> PathBuf {
    dir.join(format!("{cookie:016x}{SUFFIX}"))
}

/// A usable directory: root's own and nobody else's to write (created 0700 if missing).
fn ready_dir(dir: &Path, create: bool) -> bool {
    if create && !dir.is_dir() && std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).is_err() {
        return false;
    }
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == euid() && m.mode() & 0o022 == 0)
}

/// The cached ruleset of namespace `cookie` at `generation`, if any level has it and the
/// interface names it was rendered with (if any) are still those of `current_ifnames()`.
pub fn lookup(
    cfg: &CacheConfig,
    cookie: u64,
    generation: u32,
    current_ifnames: impl Fn() -> Vec<(u32, String)>,
) -> Option<(Arc<Ruleset>, CacheLevel)> {
    let fresh = |names: &Option<Vec<(u32, String)>>| {
        names.as_ref().is_none_or(|n| {
            let mut now = current_ifnames();
            now.sort();
            *n == now
        })
    };
    if cfg.memory {
        let hit = MEMORY.lock().ok()?.get(&cookie).filter(|e| e.generation == generation).cloned();
        if let Some(e) = hit {
            if fresh(&e.ifnames) {
                return Some((e.ruleset.clone(), CacheLevel::Memory));
            }
        }
    }
    let dir = cfg.dir.as_deref()?;
    let c = load(dir, cookie, generation)?;
    if !fresh(&c.ifnames) {
        return None;
    }
    let ruleset = Arc::new(c.ruleset);
    if cfg.memory {
        remember(cookie, Entry { generation, ruleset: ruleset.clone(), ifnames: c.ifnames, stored: Instant::now() });
    }
    Some((ruleset, CacheLevel::Disk))
}

fn key(cookie: u64, generation: u32) -> Option<wire::FileKey> {
    Some(wire::FileKey { build: BUILD.clone(), boot_id: BOOT_ID.clone()?, cookie, generation })
}

/// The file of namespace `cookie`, if sound, root's own and for this generation.
pub fn load(dir: &Path, cookie: u64, generation: u32) -> Option<wire::Contents> {
    let path = file_of(dir, cookie);
    let m = std::fs::symlink_metadata(&path).ok()?;
    if !m.is_file() || m.uid() != euid() || m.mode() & 0o077 != 0 || !ready_dir(dir, false) {
        return None;
    }
    let bytes = std::fs::read(&path).ok()?;
    wire::decode(&bytes, &key(cookie, generation)?).ok()
}

fn remember(cookie: u64, e: Entry) {
    let Ok(mut m) = MEMORY.lock() else { return };
    m.insert(cookie, Arc::new(e));
    while m.len() > MAX_ENTRIES {
        let Some(oldest) = m.iter().min_by_key(|(_, e)| e.stored).map(|(k, _)| *k) else { break };
        m.remove(&oldest);
    }
}

/// Keep a decode just made (a miss): in memory, and on disk when big. A small or volatile
/// ruleset is not kept, and the namespace's older entries go.
pub fn store(cfg: &CacheConfig, cookie: u64, generation: u32, ruleset: &Arc<Ruleset>, p: &Provenance) {
    let keep = !p.volatile_sets && !p.iptables_fallback && p.objects >= cfg.min_objects;
    if cfg.memory {
        if keep {
            let e = Entry { generation, ruleset: ruleset.clone(), ifnames: p.ifnames.clone(), stored: Instant::now() };
            remember(cookie, e);
        } else if let Ok(mut m) = MEMORY.lock() {
            m.remove(&cookie);
        }
    }
    let Some(dir) = cfg.dir.as_deref() else { return };
    if !keep {
        // An older, big ruleset of this namespace may have left its file.
        let _ = std::fs::remove_file(file_of(dir, cookie));
        return;
    }
    let _ = save(dir, cookie, generation, ruleset, p);
}

/// Write the file atomically (a temporary file renamed over the old one), then remove the
/// oldest files beyond [`MAX_ENTRIES`].
pub fn save(dir: &Path, cookie: u64, generation: u32, ruleset: &Ruleset, p: &Provenance) -> std::io::Result<()> {
    let other = |what: &str| std::io::Error::other(what.to_string());
    if !ready_dir(dir, true) {
        return Err(other("cache directory not root's own"));
    }
    let key = key(cookie, generation).ok_or_else(|| other("no boot id"))?;
    let bytes = wire::encode(&key, ruleset, p.ifnames.as_deref());
    let path = file_of(dir, cookie);
    let tmp = dir.join(format!(".{cookie:016x}.{}.{:?}.tmp", std::process::id(), std::thread::current().id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        std::fs::rename(&tmp, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    prune(dir);
    Ok(())
}

/// At most [`MAX_ENTRIES`] files: the oldest (by modification time) go.
fn prune(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(SUFFIX))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= MAX_ENTRIES {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - MAX_ENTRIES] {
        let _ = std::fs::remove_file(path);
    }
}

/// Forget this process's entries (tests, benchmarks).
pub fn clear_memory() {
    if let Ok(mut m) = MEMORY.lock() {
        m.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_environment() {
        let on = CacheConfig::from_vars(None, None, true);
        assert!(on.memory);
        assert_eq!(on.dir.as_deref(), Some(Path::new(DEFAULT_DIR)));
        assert_eq!(CacheConfig::from_vars(Some("1"), None, true), CacheConfig::off());
        assert!(!CacheConfig::off().enabled());
        assert_eq!(CacheConfig::from_vars(Some("0"), None, true), on);
        let moved = CacheConfig::from_vars(None, Some("/tmp/x".into()), true);
        assert_eq!(moved.dir.as_deref(), Some(Path::new("/tmp/x")));
        // Not root: this process only.
        let user = CacheConfig::from_vars(None, Some("/tmp/x".into()), false);
        assert!(user.memory && user.dir.is_none());
    }

    #[test]
    fn netns_cookie_is_per_namespace_constant() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsFd;
        let (ca, cb) = (netns_cookie(a.as_fd()), netns_cookie(b.as_fd()));
        assert!(ca.is_some(), "SO_NETNS_COOKIE needs Linux 5.14");
        assert_eq!(ca, cb);
    }

    #[test]
    fn files_other_than_root_own_0600_are_ignored() {
        // Runs as any user: "root" here is the effective user, who owns what it saves.
        let dir = std::env::temp_dir().join(format!("cdcache-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rs = Ruleset { rule_count: 5, ..Ruleset::default() };
        let p = Provenance { objects: 5000, ..Provenance::default() };
        save(&dir, 77, 3, &rs, &p).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file_of(&dir, 77)), 0o600);
        assert_eq!(load(&dir, 77, 3).map(|c| c.ruleset.rule_count), Some(5));
        assert!(load(&dir, 77, 4).is_none(), "another generation");
        assert!(load(&dir, 78, 3).is_none(), "another namespace");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file_of(&dir, 77), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&dir, 77, 3).is_none(), "readable by others");
        std::fs::set_permissions(file_of(&dir, 77), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(load(&dir, 77, 3).is_none(), "directory writable by others");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // At most MAX_ENTRIES files.
        for c in 100..100 + MAX_ENTRIES as u64 + 3 {
            save(&dir, c, 1, &rs, &p).unwrap();
        }
        let n = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(n, MAX_ENTRIES);
    }
}
