//! Which network namespace on this machine owns an address: every distinct namespace of a
//! running process (deduplicated by inode), plus the bind-mounted ones (`/run/netns/*`,
//! `/var/run/docker/netns/*`), each asked for its addresses over rtnetlink from a thread
//! that entered it. Bounded in count and time.

use conndoc_facts::nat::NetnsIdentity;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Directories where namespaces are bind-mounted by name (`ip netns`, dockerd).
pub const NETNS_DIRS: &[&str] = &["/var/run/docker/netns", "/run/docker/netns", "/run/netns"];

/// At most this many namespaces are searched.
pub const MAX_NAMESPACES: usize = 4096;
/// Pids kept per namespace in its identity.
const PIDS_KEPT: usize = 4;
/// Worker threads entering namespaces: one per core, at most this many (each namespace
/// costs a few syscalls, ~20 µs of CPU; more threads than cores would only take CPU from
/// whatever else the machine runs).
const MAX_WORKERS: usize = 8;

fn workers(n: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    // A few namespaces are not worth a thread each.
    cores.clamp(1, MAX_WORKERS).min(n.div_ceil(16)).max(1)
}

/// One namespace that can be entered.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub identity: NetnsIdentity,
    /// The file to enter it by (a bind mount, or `/proc/PID/ns/net`).
    pub path: PathBuf,
}

/// Every distinct network namespace on this machine, bind-mounted ones first (named
/// namespaces are what DNAT backends and containers usually are), bounded by `max`.
pub fn namespaces(max: usize) -> (Vec<Candidate>, bool) {
    let mut by_inode: BTreeMap<u64, Candidate> = BTreeMap::new();
    let mut order: Vec<u64> = Vec::new();
    let mut truncated = false;
    for dir in NETNS_DIRS {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            let path = e.path();
            // The bind mount's inode is the namespace's (nsfs); a plain file is not one.
            let Ok(md) = std::fs::metadata(&path) else { continue };
            if md.dev() == 0 || !md.is_file() {
                continue;
            }
            let ino = md.ino();
            let c = by_inode.entry(ino).or_insert_with(|| {
                order.push(ino);
                Candidate {
                    identity: NetnsIdentity {
                        inode: ino,
                        entered_by: path.display().to_string(),
                        ..Default::default()
                    },
                    path: path.clone(),
                }
            });
            let p = path.display().to_string();
            if !c.identity.paths.contains(&p) {
                c.identity.paths.push(p);
            }
        }
    }
    for pid in crate::procs::pids() {
        let Some(ino) = crate::procs::netns_of(pid) else { continue };
        let c = by_inode.entry(ino).or_insert_with(|| {
            order.push(ino);
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            Candidate {
                identity: NetnsIdentity { inode: ino, entered_by: path.display().to_string(), ..Default::default() },
                path,
            }
        });
        if c.identity.pids.len() < PIDS_KEPT {
            c.identity.pids.push(pid);
        }
    }
    if order.len() > max {
        order.truncate(max);
        truncated = true;
    }
    let out = order.into_iter().filter_map(|i| by_inode.remove(&i)).collect();
    (out, truncated)
}

/// The result of a search.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub found: Option<NetnsIdentity>,
    /// Every namespace searched that has the address, in search order, when more than one
    /// does (separate bridges, two engines' first containers, a duplicated address); `found`
    /// is one of them and `chosen_because` says why.
    pub owners: Vec<NetnsIdentity>,
    pub chosen_because: Option<String>,
    /// Namespaces whose addresses were read.
    pub searched: u32,
    pub elapsed: Duration,
    /// Why the search did not cover every namespace (deadline, bound, permission), if so.
    pub incomplete: Option<String>,
}

/// The namespace (other than those in `skip`) that has `addr` on one of its interfaces.
/// Several namespaces may hold the same address (separate bridges, labs): with `mac` (the
/// link-layer address the front namespace's neighbour table has for `addr`) the one whose
/// interface carries that MAC wins; the first holder is the fallback.
pub fn find_owner(addr: IpAddr, skip: &[u64], deadline: Duration, mac: Option<&str>) -> Search {
    let start = Instant::now();
    let (all, truncated) = namespaces(MAX_NAMESPACES);
    let mut s = find_owner_among(&all, truncated, addr, skip, deadline, mac);
    s.elapsed = start.elapsed();
    s
}

/// [`find_owner`] among namespaces already listed by [`namespaces`]`(MAX_NAMESPACES)`
/// (`truncated` as it said): a batch lists them once and looks up each address.
pub fn find_owner_among(
    all: &[Candidate],
    truncated: bool,
    addr: IpAddr,
    skip: &[u64],
    deadline: Duration,
    mac: Option<&str>,
) -> Search {
    let start = Instant::now();
    let cands: Vec<Candidate> = all.iter().filter(|c| !skip.contains(&c.identity.inode)).cloned().collect();
    let mut s = search(&cands, addr, start + deadline, mac);
    if truncated && s.found.is_none() {
        s.incomplete.get_or_insert(format!("more than {MAX_NAMESPACES} namespaces: the rest were not searched"));
    }
    s.elapsed = start.elapsed();
    s
}

/// Search these candidates, split over a few worker threads. Every owner is found (an
/// address may repeat across namespaces: the report lists them all); the one whose
/// interface has `mac`, when given, wins, else the first in search order.
pub fn search(cands: &[Candidate], addr: IpAddr, until: Instant, mac: Option<&str>) -> Search {
    use std::sync::atomic::{AtomicU32, Ordering};
    let start = Instant::now();
    let searched = AtomicU32::new(0);
    let chunk = cands.len().div_ceil(workers(cands.len())).max(1);
    // (candidate index, whether its interface has the MAC) per owner, and why a part stopped.
    type Part = (Vec<(usize, bool)>, Option<String>);
    let results: Vec<Part> = std::thread::scope(|s| {
        let hs: Vec<_> = cands
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                let searched = &searched;
                s.spawn(move || {
                    let mut why = None;
                    let mut owners = Vec::new();
                    for (i, c) in part.iter().enumerate() {
                        if Instant::now() >= until {
                            why = Some("the search deadline passed before every namespace was read".to_string());
                            break;
                        }
                        match addresses_in(&c.path) {
                            Ok(addrs) => {
                                searched.fetch_add(1, Ordering::Relaxed);
                                let Some(&(_, ifindex)) = addrs.iter().find(|(a, _)| *a == addr) else { continue };
                                let exact = mac.is_some_and(|m| {
                                    conndoc_netlink::links().is_ok_and(|ls| {
                                        ls.iter().any(|l| l.index == ifindex && l.lladdr.as_deref() == Some(m))
                                    })
                                });
                                owners.push((n * chunk + i, exact));
                            }
                            // EACCES: this /proc/PID/ns/net only is closed (a process with
                            // capabilities conndoc lacks, no CAP_SYS_PTRACE): go on with the
                            // rest (/run/netns); EPERM: no setns at all, stop.
                            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                                why.get_or_insert_with(|| format!("some namespaces could not be opened (a process's /proc/PID/ns/net needs CAP_SYS_PTRACE): {e}"));
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                                why = Some(format!("entering network namespaces needs root (CAP_SYS_ADMIN): {e}"));
                                break;
                            }
                            Err(_) => {} // gone meanwhile, or not a namespace
                        }
                    }
                    (owners, why)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or((Vec::new(), Some("a search thread panicked".into())))).collect()
    });
    let mut out = Search { searched: searched.load(Ordering::Relaxed), elapsed: start.elapsed(), ..Default::default() };
    let mut owners: Vec<(usize, bool)> = Vec::new();
    for (o, why) in results {
        owners.extend(o);
        if out.incomplete.is_none() {
            out.incomplete = why;
        }
    }
    owners.sort_unstable();
    let pick = owners.iter().find(|(_, exact)| *exact).or(owners.first()).copied();
    if let Some((i, exact)) = pick {
        out.found = Some(cands[i].identity.clone());
        if owners.len() > 1 {
            out.owners = owners.iter().map(|(i, _)| cands[*i].identity.clone()).collect();
            out.chosen_because = Some(match (exact, mac) {
                (true, Some(m)) => format!(
                    "its interface has {m}, the link-layer address the neighbour table of the namespace conndoc dials from holds for {addr}"
                ),
                (_, Some(m)) => format!(
                    "none of them has {m}, the link-layer address the dialling namespace's neighbour table holds for {addr}: the first in search order (bind-mounted namespaces first)"
                ),
                (_, None) => format!(
                    "no neighbour entry for {addr} tells them apart: the first in search order (bind-mounted namespaces first)"
                ),
            });
        }
        out.incomplete = None;
    }
    out
}

/// Addresses of one namespace, read from this (worker) thread after entering it. The
/// thread stays in the last namespace it entered; it is a worker of [`search`] and ends
/// with it.
fn addresses_in(path: &PathBuf) -> std::io::Result<Vec<(IpAddr, u32)>> {
    let f = File::open(path)?;
    crate::netns::setns_net(&f)?;
    let a = conndoc_netlink::addresses_small().map_err(std::io::Error::other)?;
    Ok(a.into_iter().map(|a| (a.address, a.ifindex)).collect())
}

/// Run `f` inside each candidate's namespace, split over a few worker threads, until
/// `until`. One result per candidate, in order: `None` when the deadline passed first, an
/// error when the namespace could not be entered.
pub fn each_in<T: Send>(
    cands: &[Candidate],
    until: Instant,
    f: impl Fn(&Candidate) -> T + Sync,
) -> Vec<Option<std::io::Result<T>>> {
    let chunk = cands.len().div_ceil(workers(cands.len())).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let hs: Vec<_> = cands
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|c| {
                            if Instant::now() >= until {
                                return None;
                            }
                            // The thread stays in the last namespace it entered; it ends here.
                            let entered = File::open(&c.path).and_then(|file| crate::netns::setns_net(&file));
                            Some(entered.map(|()| f(c)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .zip(cands.chunks(chunk))
            .flat_map(|(h, part)| {
                h.join().unwrap_or_else(|_| {
                    part.iter().map(|_| Some(Err(std::io::Error::other("a worker thread panicked")))).collect()
                })
            })
            .collect()
    })
}

/// The listeners of one namespace (`conndoc listeners --all-netns`).
#[derive(Debug, Clone)]
pub struct NetnsListeners {
    pub identity: NetnsIdentity,
    pub listeners: Vec<conndoc_facts::host::Listener>,
    /// Why its socket table was not read (entering denied, gone, deadline).
    pub error: Option<String>,
}

/// Every namespace's listeners (optionally on one port), with their owning processes:
/// the sockets are read inside each namespace, the owners in one pass over the process
/// table (socket inodes are unique machine-wide). At most `max` namespaces, until `deadline`;
/// the second value says what was left out, if anything.
pub fn listeners_everywhere(
    port: Option<u16>,
    max: usize,
    deadline: Duration,
) -> (Vec<NetnsListeners>, Option<String>) {
    let until = Instant::now() + deadline;
    let (cands, truncated) = namespaces(max);
    let read = each_in(&cands, until, |_| crate::sockets::listeners(port));
    let mut out: Vec<NetnsListeners> = Vec::with_capacity(cands.len());
    let mut late = 0usize;
    for (c, r) in cands.into_iter().zip(read) {
        let (listeners, error) = match r {
            Some(Ok(Ok(ls))) => (ls, None),
            Some(Ok(Err(e))) => (Vec::new(), Some(e.to_string())),
            Some(Err(e)) => (Vec::new(), Some(format!("cannot enter {}: {e}", c.path.display()))),
            None => {
                late += 1;
                (Vec::new(), Some("not read: the deadline passed first".to_string()))
            }
        };
        out.push(NetnsListeners { identity: c.identity, listeners, error });
    }
    let wanted: std::collections::BTreeSet<u64> =
        out.iter().flat_map(|n| n.listeners.iter().map(|l| l.inode)).collect();
    let (owners, _) = crate::procs::owners(&wanted, None, None);
    let mut info = BTreeMap::new();
    for n in &mut out {
        let ns = Some(n.identity.inode);
        for l in &mut n.listeners {
            if let Some(&pid) = owners.get(&l.inode) {
                l.process = info.entry((pid, n.identity.inode)).or_insert_with(|| crate::procs::info(pid, ns)).clone();
            }
        }
    }
    let mut left = Vec::new();
    if truncated {
        left.push(format!("more than {max} namespaces: the rest were not listed"));
    }
    if late > 0 {
        left.push(format!("{late} namespace(s) not read before the {} ms deadline", deadline.as_millis()));
    }
    (out, (!left.is_empty()).then(|| left.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespace_is_listed() {
        let (all, _) = namespaces(MAX_NAMESPACES);
        let ours = crate::procs::current_netns().expect("own namespace");
        let me = all.iter().find(|c| c.identity.inode == ours).expect("listed");
        assert!(!me.identity.pids.is_empty());
        let mut seen = std::collections::BTreeSet::new();
        assert!(all.iter().all(|c| seen.insert(c.identity.inode)), "deduplicated by inode");
    }

    #[test]
    fn finds_loopback_in_our_namespace_or_says_why_not() {
        // Entering a namespace needs CAP_SYS_ADMIN; without it the search says so.
        let ours = crate::procs::current_netns().unwrap();
        let cands: Vec<Candidate> =
            namespaces(MAX_NAMESPACES).0.into_iter().filter(|c| c.identity.inode == ours).collect();
        let s = search(&cands, "127.0.0.1".parse().unwrap(), Instant::now() + Duration::from_secs(2), None);
        match s.found {
            Some(id) => assert_eq!(id.inode, ours),
            None => assert!(s.incomplete.as_deref().unwrap_or("").contains("root"), "{s:?}"),
        }
        // An address nobody has: searched, not found, nothing incomplete (as root).
        let s = search(&cands, "192.0.2.77".parse().unwrap(), Instant::now() + Duration::from_secs(2), None);
        assert!(s.found.is_none());
    }

    #[test]
    fn every_namespace_listeners_include_ours() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (all, left) = listeners_everywhere(Some(port), MAX_NAMESPACES, Duration::from_secs(5));
        assert!(left.is_none(), "{left:?}");
        let ours = crate::procs::current_netns().unwrap();
        let me = all.iter().find(|n| n.identity.inode == ours).expect("our namespace is listed");
        match &me.error {
            // Entering namespaces needs CAP_SYS_ADMIN; without it each group says why.
            Some(e) => assert!(e.contains("cannot enter"), "{e}"),
            None => {
                let row = me.listeners.iter().find(|r| r.port() == port).expect("our listener");
                assert_eq!(row.process.as_ref().map(|p| p.pid), Some(std::process::id()));
            }
        }
    }
}
