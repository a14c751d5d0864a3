//! A real OpenSSH server in a lab host (`[[sshd]]`), and what a client needs to reach it:
//! a host key, a client key and its authorized_keys line, a known_hosts line and a client
//! config, all made with `ssh-keygen` in the scenario's temp dir (`{dir}/ssh/`).
//!
//! Placeholders for scenario files: `{ssh_command}` (a CONNDOC_SSH_COMMAND using this
//! scenario's config, key and known_hosts), `{ssh_dir}`, `{conndoc}` (the binary under test).

use crate::{run, setup_err, write, Lab, LabError};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const SSHD: &str = "/usr/sbin/sshd";

pub(crate) fn dir(lab: &Lab) -> PathBuf {
    lab.dir.join("ssh")
}

/// A short private directory for `XDG_RUNTIME_DIR` (`{ssh_runtime}`): ControlMaster socket
/// paths must stay under ~90 bytes, and the scenario's temp dir is longer. Removed at teardown.
pub(crate) fn runtime_dir(lab: &Lab) -> PathBuf {
    let first = lab.ns.values().next().cloned().unwrap_or_default();
    PathBuf::from(format!("/tmp/{first}-rt"))
}

/// `ssh -F … -i … -o UserKnownHostsFile=…`: the scenario's own client setup, never the
/// machine user's keys, agent or known_hosts.
pub(crate) fn ssh_command(lab: &Lab) -> String {
    let d = dir(lab);
    format!(
        "ssh -F {}/config -i {}/client_key -o UserKnownHostsFile={}/known_hosts",
        d.display(),
        d.display(),
        d.display()
    )
}

pub(crate) fn start(lab: &mut Lab, spec: &crate::scenario::SshdSpec) -> Result<(), LabError> {
    if !Path::new(SSHD).exists() {
        return Err(setup_err("sshd", format!("{SSHD} not found (Debian package openssh-server)")));
    }
    let d = dir(lab);
    std::fs::create_dir_all(d.join("bin")).map_err(|e| setup_err("ssh dir", e.to_string()))?;
    {
        use std::os::unix::fs::DirBuilderExt;
        let rt = runtime_dir(lab);
        let _ = std::fs::remove_dir_all(&rt);
        std::fs::DirBuilder::new().mode(0o700).create(&rt).map_err(|e| setup_err("ssh runtime dir", e.to_string()))?;
    }
    let ds = d.display().to_string();
    for key in ["host_key", "client_key"] {
        run(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "conndoc-lab", "-f", &format!("{ds}/{key}")])?;
    }
    let client_pub =
        std::fs::read_to_string(d.join("client_key.pub")).map_err(|e| setup_err("read key", e.to_string()))?;
    write(&d.join("authorized_keys"), &client_pub)?;
    let host_pub = std::fs::read_to_string(d.join("host_key.pub")).map_err(|e| setup_err("read key", e.to_string()))?;
    let mut fields = host_pub.split_whitespace();
    let (kind, key) = (fields.next().unwrap_or_default(), fields.next().unwrap_or_default());
    let name = if spec.port == 22 { spec.listen.clone() } else { format!("[{}]:{}", spec.listen, spec.port) };
    write(&d.join("known_hosts"), &format!("{name} {kind} {key}\n"))?;
    // The session PATH starts with {dir}/ssh/bin, where the conndoc under test is linked
    // when the run starts (`conndoc_on_path`).
    let path = format!("{ds}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    write(
        &d.join("sshd_config"),
        &format!(
            "Port {port}\nListenAddress {listen}\nHostKey {ds}/host_key\nAuthorizedKeysFile {ds}/authorized_keys\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nPidFile {ds}/sshd.pid\nSetEnv PATH={path}\nLogLevel VERBOSE\n\
             MaxStartups 100\nMaxSessions 100\n",
            port = spec.port,
            listen = spec.listen,
        ),
    )?;
    write(
        &d.join("config"),
        "Host *\n  User root\n  IdentitiesOnly yes\n  IdentityAgent none\n  StrictHostKeyChecking yes\n  \
         GlobalKnownHostsFile /dev/null\n  UpdateHostKeys no\n  LogLevel ERROR\n",
    )?;
    // Private keys must not be readable by others, or ssh refuses them.
    for f in ["client_key", "host_key"] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o600));
    }
    // sshd's privilege-separation directory (Debian's unit creates it at boot).
    std::fs::create_dir_all("/run/sshd").map_err(|e| setup_err("/run/sshd", e.to_string()))?;
    let argv = vec![SSHD.to_string(), "-D".into(), "-e".into(), "-f".into(), format!("{ds}/sshd_config")];
    lab.spawn(&spec.host, Some(format!("sshd-{}", spec.host)), &argv, None)?;
    lab.wait_listen(&spec.host, spec.port, Duration::from_secs(5))
}

/// Link the binary under test into the session PATH.
pub(crate) fn link_conndoc(lab: &Lab, bin: &Path) -> Result<(), LabError> {
    let link = dir(lab).join("bin").join("conndoc");
    let _ = std::fs::remove_file(&link);
    let abs = std::fs::canonicalize(bin).map_err(|e| setup_err("conndoc path", e.to_string()))?;
    std::os::unix::fs::symlink(abs, &link).map_err(|e| setup_err("link conndoc", e.to_string()))
}

/// Samples every process's command line (all namespaces share this pid namespace, so both
/// ends of an SSH session) until stopped. Bounded: at most 10,000 distinct lines are kept.
pub(crate) struct CmdlineSampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CmdlineSampler {
    pub(crate) fn start() -> CmdlineSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (s2, seen2) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let me = std::process::id().to_string();
            while !s2.load(Ordering::SeqCst) {
                if let Ok(rd) = std::fs::read_dir("/proc") {
                    for e in rd.flatten() {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
                            continue;
                        }
                        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                            let line = String::from_utf8_lossy(&c).replace('\0', " ");
                            let mut set = seen2.lock().unwrap_or_else(|e| e.into_inner());
                            if set.len() < 10_000 {
                                set.insert(line);
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        CmdlineSampler { stop, seen, thread: Some(thread) }
    }

    pub(crate) fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let set = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        set.into_iter().collect()
    }
}

impl Drop for CmdlineSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
