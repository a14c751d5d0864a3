//! The container id in `/proc/PID/cgroup`: engine-agnostic identity when no engine API
//! answers. Handles cgroup v1 (`N:controller:/path`) and v2 (`0::/path`) lines, the
//! cgroupfs and systemd drivers of Docker, containerd (CRI), CRI-O and podman, and skips the
//! `conmon` monitors of CRI-O and podman (they are not the container).

use conndoc_facts::container::ContainerEngine;

/// A container id found in a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupId {
    pub engine: ContainerEngine,
    pub id: String,
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One path component: `docker-ID.scope`, `cri-containerd-ID.scope`, `crio-ID.scope`,
/// `libpod-ID.scope`, or a bare `ID` whose engine the parent component names.
fn component(c: &str, parent: Option<&str>) -> Option<CgroupId> {
    let c = c.strip_suffix(".scope").unwrap_or(c);
    for (prefix, engine) in [
        ("docker-", ContainerEngine::Docker),
        ("cri-containerd-", ContainerEngine::Containerd),
        ("crio-", ContainerEngine::Crio),
        ("libpod-", ContainerEngine::Podman),
    ] {
        if let Some(id) = c.strip_prefix(prefix) {
            // `crio-conmon-ID` / `libpod-conmon-ID` are the monitors, not the container.
            return is_id(id).then(|| CgroupId { engine, id: id.to_string() });
        }
    }
    if !is_id(c) {
        return None;
    }
    let engine = match parent {
        Some("docker") => ContainerEngine::Docker,
        Some("libpod_parent") => ContainerEngine::Podman,
        _ => ContainerEngine::Unknown,
    };
    Some(CgroupId { engine, id: c.to_string() })
}

/// The container id in one cgroup path (the deepest, for nested containers).
pub fn parse_path(path: &str) -> Option<CgroupId> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    (0..parts.len()).rev().find_map(|i| {
        // podman (systemd driver) puts the payload in `libpod-ID.scope/container`.
        let parent = i.checked_sub(1).map(|p| parts[p]);
        component(parts[i], parent)
    })
}

/// The container id in the text of `/proc/PID/cgroup`: the first line that names one.
pub fn parse(text: &str) -> Option<CgroupId> {
    text.lines().find_map(|line| {
        let mut f = line.splitn(3, ':');
        let (_hier, _ctrl, path) = (f.next()?, f.next()?, f.next()?);
        parse_path(path)
    })
}

/// Read and parse `/proc/PID/cgroup` (bounded: the file is small; 64 KiB at most is read).
pub fn of_pid(pid: u32) -> Option<CgroupId> {
    use std::io::Read;
    let f = std::fs::File::open(format!("/proc/{pid}/cgroup")).ok()?;
    let mut buf = String::new();
    f.take(64 * 1024).read_to_string(&mut buf).ok()?;
    parse(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "e789749d466b394f7abd25eab1ccda533d154f6a4df486ee2c8589f53e3cfa6d";

    fn one(text: &str) -> Option<(ContainerEngine, String)> {
        parse(text).map(|c| (c.engine, c.id))
    }

    /// Lines recorded from real hosts (the first from this machine's lab dockerd, cgroup v1
    /// with the cgroupfs driver; the others from hosts of each engine).
    #[test]
    fn recorded_lines() {
        let docker_v1 =
            format!("9:name=systemd:/docker/{ID}\n8:pids:/docker/{ID}\n4:memory:/docker/{ID}\n0::/docker/{ID}\n");
        assert_eq!(one(&docker_v1), Some((ContainerEngine::Docker, ID.into())));
        let docker_v2_systemd = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(one(&docker_v2_systemd), Some((ContainerEngine::Docker, ID.into())));
        let rootless = format!("0::/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{ID}.scope\n");
        assert_eq!(one(&rootless), Some((ContainerEngine::Docker, ID.into())));
        let k8s_containerd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1b2c3d_4e5f_6789_abcd_ef0123456789.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(one(&k8s_containerd), Some((ContainerEngine::Containerd, ID.into())));
        let k8s_cgroupfs = format!("12:memory:/kubepods/burstable/pod0f1b2c3d-4e5f-6789-abcd-ef0123456789/{ID}\n");
        assert_eq!(one(&k8s_cgroupfs), Some((ContainerEngine::Unknown, ID.into())));
        let crio =
            format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc.slice/crio-{ID}.scope\n");
        assert_eq!(one(&crio), Some((ContainerEngine::Crio, ID.into())));
        let podman = format!("0::/machine.slice/libpod-{ID}.scope/container\n");
        assert_eq!(one(&podman), Some((ContainerEngine::Podman, ID.into())));
        let podman_cgroupfs = format!("0::/libpod_parent/{ID}\n");
        assert_eq!(one(&podman_cgroupfs), Some((ContainerEngine::Podman, ID.into())));
    }

    #[test]
    fn monitors_hosts_and_nesting() {
        // conmon runs beside the container, in its own scope: not the container.
        assert_eq!(one(&format!("0::/machine.slice/libpod-conmon-{ID}.scope\n")), None);
        assert_eq!(one(&format!("0::/system.slice/crio-conmon-{ID}.scope\n")), None);
        // Processes outside any container.
        assert_eq!(one("0::/init.scope\n"), None);
        assert_eq!(one("0::/system.slice/ssh.service\n"), None);
        assert_eq!(one("12:memory:/\n0::/\n"), None);
        assert_eq!(one("0::/user.slice/user-0.slice/session-3.scope\n"), None);
        // Not 64 hex digits.
        assert_eq!(one("0::/docker/abc123\n"), None);
        assert_eq!(one(&format!("0::/docker/{}\n", &ID[..63])), None);
        // Docker in Docker: the innermost container.
        let inner = "a".repeat(64);
        assert_eq!(one(&format!("0::/docker/{ID}/docker/{inner}\n")), Some((ContainerEngine::Docker, inner)));
        // Garbage lines are ignored.
        assert_eq!(one("garbage\n::\n"), None);
    }
}
