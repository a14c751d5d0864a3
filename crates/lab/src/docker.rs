//! A real Docker engine inside a lab host (docs/lab.md, "Docker").
//!
//! `dockerd` (Debian's docker.io) runs with its own `--data-root`, `--exec-root` and socket,
//! inside the host's network namespace (so `docker0`, its iptables chains, the FORWARD policy
//! and `ip_forward` live there and vanish with it) and in a private mount namespace (so its
//! overlay and nsfs mounts vanish with its processes). It is entered with `nsenter --net`
//! rather than `ip netns exec` because the latter remounts /sys, which hides the cgroup
//! hierarchy dockerd needs.
//!
//! What the engine still changes outside the namespace — /etc/docker/key.json,
//! /run/docker, the `docker` cgroups, and (checked, though it stays per-namespace)
//! the host's ip_forward and FORWARD policy — is recorded before the first engine of this
//! process starts and restored after the last one stops, also when a test fails (the
//! owning [`crate::Lab`]'s `Drop`).
//!
//! The test image is imported (`docker import`) from a root filesystem made of host
//! binaries: redis-server, busybox, their shared libraries (`ldd`) and the dynamic loader.
//! It is built once per process and reused by every engine.

use crate::{output_with_deadline, setup_err, LabError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tag every lab engine knows the test image by (`{image}` in scenario files).
pub const IMAGE: &str = "conndoc-lab/redis:1";

/// A running dockerd of one lab host.
pub struct Dockerd {
    pub host: String,
    dir: PathBuf,
    child: Option<Child>,
    /// Container ids this engine created (their cgroups are removed at teardown).
    created: Vec<String>,
    /// The socket conndoc is given (DOCKER_HOST, `{docker:HOST}`): a proxy in front of the
    /// engine's own socket recording every request, so a scenario proves conndoc only read.
    recorder: Option<crate::enginesock::Recorder>,
}

/// State outside the lab namespaces that dockerd may change, as found before the first
/// engine of this process started.
struct Global {
    users: u32,
    image_tar: Option<PathBuf>,
    saved: Vec<Saved>,
}

#[derive(Debug)]
enum Saved {
    /// A file or directory that did not exist: removed again.
    Absent(PathBuf),
    /// A sysctl file and its value: written back when it changed.
    Value(PathBuf, String),
    /// The host namespace's iptables FORWARD policy.
    ForwardPolicy(String),
}

static GLOBAL: Mutex<Global> = Mutex::new(Global { users: 0, image_tar: None, saved: Vec::new() });

fn cgroup_roots() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default()
}

fn forward_policy() -> Option<String> {
    let out = Command::new("iptables").args(["-w", "5", "-S", "FORWARD"]).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    s.lines().find_map(|l| l.strip_prefix("-P FORWARD ").map(|p| p.trim().to_string()))
}

fn snapshot() -> Vec<Saved> {
    let mut saved = Vec::new();
    let mut absent = vec![PathBuf::from("/etc/docker/key.json"), PathBuf::from("/run/docker")];
    absent.extend(cgroup_roots().into_iter().map(|r| r.join("docker")));
    for p in absent {
        if !p.exists() {
            saved.push(Saved::Absent(p));
        }
    }
    let mut values =
        vec![PathBuf::from("/proc/sys/net/ipv4/ip_forward"), PathBuf::from("/proc/sys/net/ipv6/conf/all/forwarding")];
    if let Ok(rd) = std::fs::read_dir("/proc/sys/net/bridge") {
        values.extend(rd.flatten().map(|e| e.path()));
    }
    for p in values {
        if let Ok(v) = std::fs::read_to_string(&p) {
            saved.push(Saved::Value(p, v.trim().to_string()));
        }
    }
    if let Some(p) = forward_policy() {
        saved.push(Saved::ForwardPolicy(p));
    }
    saved
}

fn restore(saved: &[Saved]) {
    for s in saved {
        match s {
            Saved::Absent(p) if p.exists() => {
                let r = if p.starts_with("/sys/fs/cgroup") {
                    std::fs::remove_dir(p) // a cgroup is removed with rmdir, never recursively
                } else if p.is_dir() {
                    std::fs::remove_dir_all(p)
                } else {
                    std::fs::remove_file(p)
                };
                if let Err(e) = r {
                    eprintln!("lab: could not restore {} (absent before dockerd): {e}", p.display());
                }
            }
            Saved::Value(p, v) => {
                if std::fs::read_to_string(p).is_ok_and(|now| now.trim() != v) {
                    eprintln!("lab: dockerd changed {}; restoring {v}", p.display());
                    let _ = std::fs::write(p, v);
                }
            }
            Saved::ForwardPolicy(v) => {
                if forward_policy().is_some_and(|now| &now != v) {
                    eprintln!("lab: dockerd changed the FORWARD policy; restoring {v}");
                    let _ = Command::new("iptables").args(["-w", "5", "-P", "FORWARD", v]).status();
                }
            }
            Saved::Absent(_) => {}
        }
    }
}

/// Whether this machine can run the lab's engine.
pub fn can_run() -> Result<(), String> {
    for p in ["dockerd", "docker", "containerd", "runc", "nsenter", "unshare", "redis-server", "busybox", "ldd"] {
        if crate::which(p).is_none() {
            return Err(format!("{p} not found (Debian packages docker.io, util-linux, redis-server, busybox-static)"));
        }
    }
    if !Path::new("/sys/fs/cgroup").exists() {
        return Err("no cgroup hierarchy at /sys/fs/cgroup".into());
    }
    Ok(())
}

/// Build the image's root filesystem as a tar file (once per process).
fn build_image_tar(root: &Path) -> Result<PathBuf, LabError> {
    let fs = root.join("rootfs");
    let _ = std::fs::remove_dir_all(&fs);
    for d in ["bin", "tmp", "etc", "data"] {
        std::fs::create_dir_all(fs.join(d)).map_err(|e| setup_err("image rootfs", e.to_string()))?;
    }
    let redis = crate::which("redis-server").ok_or_else(|| setup_err("image", "redis-server not found"))?;
    let busybox = crate::which("busybox").ok_or_else(|| setup_err("image", "busybox not found"))?;
    let copy = |from: &Path, to: &Path| -> Result<(), LabError> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| setup_err("image rootfs", e.to_string()))?;
        }
        // Follows symlinks: the image gets the real file under the linked name.
        std::fs::copy(from, to).map(|_| ()).map_err(|e| setup_err(format!("copy {}", from.display()), e.to_string()))
    };
    copy(&busybox, &fs.join("bin/busybox"))?;
    copy(&redis, &fs.join("bin/redis-server"))?;
    for applet in ["sh", "ls", "cat", "echo", "sleep", "ps", "kill", "nc"] {
        std::os::unix::fs::symlink("busybox", fs.join("bin").join(applet))
            .map_err(|e| setup_err("image rootfs", e.to_string()))?;
    }
    // `ldd` lists libraries as `name => /path (addr)` and the dynamic loader as `/path (addr)`.
    let ldd = crate::run(&["ldd", &redis.display().to_string()])?;
    for line in ldd.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            copy(Path::new(p), &fs.join(p.trim_start_matches('/')))?;
        }
    }
    std::fs::write(fs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")
        .map_err(|e| setup_err("image", e.to_string()))?;
    let tar = root.join("image.tar");
    crate::run(&["tar", "-C", &fs.display().to_string(), "-cf", &tar.display().to_string(), "."])?;
    let _ = std::fs::remove_dir_all(&fs);
    Ok(tar)
}

impl Dockerd {
    /// Start dockerd inside namespace `ns`, with its state under `dir`, and import the image.
    pub fn start(host: &str, ns: &str, dir: &Path) -> Result<Dockerd, LabError> {
        can_run().map_err(|m| setup_err("dockerd", m))?;
        let tar = {
            let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
            if g.users == 0 {
                g.saved = snapshot();
            }
            g.users += 1;
            if g.image_tar.as_ref().is_none_or(|t| !t.exists()) {
                let root = std::env::temp_dir().join(format!("conndoc-lab-image-{}", std::process::id()));
                std::fs::create_dir_all(&root).map_err(|e| setup_err("image dir", e.to_string()))?;
                match build_image_tar(&root) {
                    Ok(t) => g.image_tar = Some(t),
                    Err(e) => {
                        drop(g);
                        release();
                        return Err(e);
                    }
                }
            }
            g.image_tar.clone().unwrap_or_default()
        };
        // From here on the engine counts as a user; `Drop` releases it.
        // Short: containerd's sockets under the exec root must fit a sun_path (104 bytes).
        let state = std::env::temp_dir().join(format!("cdk-{ns}"));
        let _ = std::fs::remove_dir_all(&state);
        let mut d = Dockerd { host: host.to_string(), dir: state, child: None, created: Vec::new(), recorder: None };
        std::fs::create_dir_all(&d.dir).map_err(|e| setup_err("dockerd dir", e.to_string()))?;
        let log = std::fs::File::create(dir.join(format!("dockerd-{host}.log")))
            .map_err(|e| setup_err("dockerd log", e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| setup_err("dockerd log", e.to_string()))?;
        let p = |x: &str| d.dir.join(x).display().to_string();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["--", "dockerd"])
            .args(["--data-root", &p("data"), "--exec-root", &p("exec"), "--pidfile", &p("docker.pid")])
            .args(["-H", &format!("unix://{}", p("docker.sock"))])
            .args(["--storage-driver", "overlay2", "--iptables=true", "--ip-forward=true"])
            .args([
                "--containerd-namespace",
                &format!("{ns}-ctr"),
                "--containerd-plugins-namespace",
                &format!("{ns}-plg"),
            ])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| setup_err("spawn dockerd", e.to_string()))?;
        d.child = Some(child);
        let start = Instant::now();
        loop {
            if d.sock().exists()
                && d.cli(&["version", "--format", "{{.Server.Version}}"], Duration::from_secs(5)).is_ok()
            {
                break;
            }
            if let Some(Ok(Some(st))) = d.child.as_mut().map(|c| c.try_wait()) {
                return Err(setup_err(
                    "dockerd",
                    format!("exited with {st} before it answered (see dockerd-{host}.log)"),
                ));
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(setup_err("dockerd", "did not answer on its socket within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        d.cli(&["import", &tar.display().to_string(), IMAGE], Duration::from_secs(60))?;
        let rec = crate::enginesock::Recorder::start(&d.dir.join("rec.sock"), &d.sock())
            .map_err(|e| setup_err("engine request recorder", e.to_string()))?;
        d.recorder = Some(rec);
        Ok(d)
    }

    /// The engine's own socket (the lab's docker CLI calls use it; they are not recorded).
    pub fn sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The value of DOCKER_HOST conndoc gets for this engine: the recording proxy.
    pub fn docker_host(&self) -> String {
        let p = self.recorder.as_ref().map_or_else(|| self.sock(), |r| r.path().to_path_buf());
        format!("unix://{}", p.display())
    }

    /// `METHOD PATH` of every request made through [`Dockerd::docker_host`] since the last
    /// [`Dockerd::clear_requests`].
    pub fn requests(&self) -> Vec<String> {
        self.recorder.as_ref().map(|r| r.requests()).unwrap_or_default()
    }

    pub fn clear_requests(&self) {
        if let Some(r) = &self.recorder {
            r.clear();
        }
    }

    /// Every container's name, state, pid, start and finish times and restart count, as
    /// the engine reports them: equal before and after a read-only run.
    pub fn states(&self) -> Result<Vec<String>, LabError> {
        let ids = self.cli(&["ps", "-aq", "--no-trunc"], Duration::from_secs(10))?;
        let mut args = vec![
            "inspect",
            "--format",
            "{{.Id}} {{.Name}} {{.State.Status}} pid={{.State.Pid}} started={{.State.StartedAt}} finished={{.State.FinishedAt}} restarts={{.RestartCount}}",
        ];
        args.extend(ids.split_whitespace());
        if args.len() == 3 {
            return Ok(Vec::new());
        }
        let out = self.cli(&args, Duration::from_secs(10))?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Run the docker CLI against this engine; it must succeed within `max`.
    pub fn cli(&self, args: &[&str], max: Duration) -> Result<String, LabError> {
        let mut cmd = Command::new("docker");
        cmd.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock().display()))
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .stdin(Stdio::null());
        let out = output_with_deadline(cmd, max)?;
        if !out.status.success() {
            return Err(setup_err(
                format!("docker {}", args.join(" ")),
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A scenario's `docker = [...]` step.
    pub fn step(&mut self, args: &[String]) -> Result<String, LabError> {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.cli(&a, Duration::from_secs(30))?;
        if matches!(a.first(), Some(&"run") | Some(&"create")) {
            if let Some(id) = out.lines().last().map(str::trim).filter(|l| l.len() == 64) {
                self.created.push(id.to_string());
            }
        }
        Ok(out)
    }

    /// The pid of a running container's first process (`State.Pid`).
    pub fn container_pid(&self, name: &str) -> Result<u32, LabError> {
        let out = self.cli(&["inspect", "--format", "{{.State.Pid}}", name], Duration::from_secs(10))?;
        out.trim()
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| setup_err("container pid", format!("{name} is not running")))
    }

    /// Remove every container, stop the engine, reap it.
    fn stop(&mut self) {
        self.recorder = None;
        let Some(mut child) = self.child.take() else { return };
        if let Ok(ids) = self.cli(&["ps", "-aq", "--no-trunc"], Duration::from_secs(10)) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            self.created.extend(ids.iter().map(|s| s.to_string()));
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids);
                let _ = self.cli(&args, Duration::from_secs(20));
            }
        }
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Remove the cgroups of this engine's containers (runc leaves them when killed hard).
    fn remove_cgroups(&self) {
        for root in cgroup_roots() {
            for id in &self.created {
                let p = root.join("docker").join(id);
                if p.exists() {
                    let _ = std::fs::remove_dir(&p);
                }
            }
        }
    }
}

/// One engine fewer; the last one restores the machine's state and removes the image tar.
fn release() {
    let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    g.users = g.users.saturating_sub(1);
    if g.users == 0 {
        restore(&g.saved);
        g.saved.clear();
        if let Some(t) = g.image_tar.take() {
            if let Some(parent) = t.parent() {
                let _ = std::fs::remove_dir_all(parent);
            }
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        // runc removes a container's cgroup when it exits; give stragglers a moment.
        for _ in 0..20 {
            self.remove_cgroups();
            if cgroup_roots().iter().all(|r| self.created.iter().all(|id| !r.join("docker").join(id).exists())) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its mounts lived in its private mount namespace, gone with its processes.
        if std::env::var_os("CONNDOC_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        release();
    }
}

/// Finish an engine: stop it, kill what is left in its namespace (`sweep`), remove its
/// cgroups and give back the machine's state. The Lab calls it before deleting namespaces.
pub(crate) fn finish(mut d: Dockerd, sweep: impl Fn()) {
    d.stop();
    sweep();
    drop(d);
}
