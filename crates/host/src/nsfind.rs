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
/// Worker threads entering namespaces (the machine may be small).
const WORKERS: usize = 2;

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
    let cands: Vec<Candidate> = all.into_iter().filter(|c| !skip.contains(&c.identity.inode)).collect();
    let mut s = search(&cands, addr, start + deadline, mac);
    if truncated && s.found.is_none() {
        s.incomplete.get_or_insert(format!("more than {MAX_NAMESPACES} namespaces: the rest were not searched"));
    }
    s.elapsed = start.elapsed();
    s
}

/// Search these candidates, split over a few worker threads; the first owner found (whose
/// interface has `mac`, when given) wins.
pub fn search(cands: &[Candidate], addr: IpAddr, until: Instant, mac: Option<&str>) -> Search {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let start = Instant::now();
    let done = AtomicBool::new(false);
    let searched = AtomicU32::new(0);
    let chunk = cands.len().div_ceil(WORKERS).max(1);
    type Found = (Option<NetnsIdentity>, Option<NetnsIdentity>, Option<String>);
    let results: Vec<Found> = std::thread::scope(|s| {
        let hs: Vec<_> = cands
            .chunks(chunk)
            .map(|part| {
                let (done, searched) = (&done, &searched);
                s.spawn(move || {
                    let mut why = None;
                    let mut fallback = None;
                    for c in part {
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                        if Instant::now() >= until {
                            why = Some("the search deadline passed before every namespace was read".to_string());
                            break;
                        }
                        match addresses_in(&c.path) {
                            Ok(addrs) => {
                                searched.fetch_add(1, Ordering::Relaxed);
                                let Some(&(_, ifindex)) = addrs.iter().find(|(a, _)| *a == addr) else { continue };
                                let exact = match mac {
                                    None => true,
                                    Some(m) => conndoc_netlink::links().is_ok_and(|ls| {
                                        ls.iter().any(|l| l.index == ifindex && l.lladdr.as_deref() == Some(m))
                                    }),
                                };
                                if exact {
                                    done.store(true, Ordering::Relaxed);
                                    return (Some(c.identity.clone()), None, None);
                                }
                                fallback.get_or_insert_with(|| c.identity.clone());
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                                why = Some(format!("entering network namespaces needs root (CAP_SYS_ADMIN): {e}"));
                                break;
                            }
                            Err(_) => {} // gone meanwhile, or not a namespace
                        }
                    }
                    (None, fallback, why)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or((None, None, Some("a search thread panicked".into())))).collect()
    });
    let mut out = Search { searched: searched.load(Ordering::Relaxed), elapsed: start.elapsed(), ..Default::default() };
    let mut fallback = None;
    for (f, fb, why) in results {
        out.found = out.found.or(f);
        fallback = fallback.or(fb);
        if out.incomplete.is_none() {
            out.incomplete = why;
        }
    }
    out.found = out.found.or(fallback);
    if out.found.is_some() {
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
    let a = conndoc_netlink::addresses().map_err(std::io::Error::other)?;
    Ok(a.into_iter().map(|a| (a.address, a.ifindex)).collect())
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
}
