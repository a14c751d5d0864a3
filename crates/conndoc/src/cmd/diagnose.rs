//! `conndoc diagnose TARGET`: gather, reason, render; exit status per docs/report.md.

use super::usage;
use anyhow::Context;
use conndoc_facts::{Family, Secret, Target};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// host:port, [v6addr]:port, tcp://host:port, redis://[user:password@]host[:port][/db], rediss://…, http://…, https://…
    ///
    /// A password in the URL is visible to every user in `ps` for the whole run: give it
    /// with --password-file or the REDISCLI_AUTH environment variable instead.
    pub target: String,
    /// Print the report as one JSON object (docs/report.md).
    #[arg(long)]
    pub json: bool,
    /// Deadline of each connect and protocol exchange, e.g. 500ms, 1s, 2.5s.
    #[arg(long, default_value = "3s", value_name = "DURATION")]
    pub timeout: String,
    /// Only IPv4 addresses.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Only IPv6 addresses.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Save every fact gathered as JSON, for `conndoc explain`.
    #[arg(long, value_name = "FILE")]
    pub evidence_out: Option<PathBuf>,
    /// Inspect the target host inside this network namespace (name under /run/netns, or a path).
    #[arg(long, value_name = "NAME|PATH", conflicts_with = "netns_pid")]
    pub netns: Option<String>,
    /// Inspect the network namespace of this process (e.g. a container's main process).
    #[arg(long, value_name = "PID")]
    pub netns_pid: Option<u32>,
    /// The process that should serve the port (default from the scheme: redis → redis-server).
    #[arg(long, value_name = "PROCESS")]
    pub expect: Option<String>,
    /// Write the packets captured during the probe to this pcap file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Skip inspection of the target host even when it is local.
    #[arg(long)]
    pub no_host: bool,
    /// Probe the path with TTL-limited SYNs to the port (as `traceroute -T`) whatever the
    /// connect does; without it the path is probed only when the SYN is lost or a reset is forged.
    #[arg(long)]
    pub path: bool,
    /// TLS: do not verify the server certificate (the facts are still reported).
    #[arg(long)]
    pub insecure: bool,
    /// TLS: trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Redis: read the password from this file (else the URL, else REDISCLI_AUTH).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Read the server side on this machine over SSH (`conndoc inspect` runs there; the
    /// ssh command is `ssh`, or CONNDOC_SSH_COMMAND split like a shell would).
    #[arg(long, value_name = "[USER@]HOST[:PORT]")]
    pub ssh: Option<String>,
    /// The conndoc binary on the SSH host (default: `conndoc` from its PATH).
    #[arg(long, value_name = "PATH", requires = "ssh", default_value = "conndoc")]
    pub remote_conndoc: String,
    /// Deadline of connecting and logging in over SSH (added to the run's own).
    #[arg(long, value_name = "DURATION", requires = "ssh", default_value = "5s")]
    pub ssh_timeout: String,
}

/// `--ssh`, `--remote-conndoc`, `--ssh-timeout` and CONNDOC_SSH_COMMAND, checked.
pub fn ssh_options(
    dest: &str,
    remote_conndoc: &str,
    connect_timeout: &str,
) -> anyhow::Result<conndoc_engine::remote::SshOptions> {
    use conndoc_engine::remote::{ssh_command_from_env, Destination, SshOptions};
    let destination = Destination::parse(dest).map_err(usage)?;
    let command = ssh_command_from_env().map_err(usage)?;
    let connect_timeout = conndoc_facts::duration::parse_in(
        connect_timeout,
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(120),
    )
    .map_err(|e| usage(format!("--ssh-timeout: {e}")))?;
    if remote_conndoc.is_empty() || remote_conndoc.starts_with('-') || remote_conndoc.chars().any(char::is_control) {
        return Err(usage(format!("--remote-conndoc {remote_conndoc:?}: not a program name or path")));
    }
    Ok(SshOptions {
        destination,
        command,
        remote_conndoc: remote_conndoc.into(),
        connect_timeout,
        control_dir: None,
        control_persist: std::time::Duration::ZERO,
    })
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let mut target = Target::parse(&a.target).map_err(|e| usage(e.to_string()))?;
    let timeout = super::parse_timeout(&a.timeout)?;
    if let Some(p) = &a.password_file {
        let text = conndoc_files::read_to_string(p, conndoc_files::limit::PASSWORD)
            .map_err(|e| usage(format!("--password-file: {e}")))?;
        let pw = text.trim_end_matches(['\n', '\r']);
        if pw.is_empty() {
            return Err(usage(format!("password file {} is empty", p.display())));
        }
        target.password = Some(Secret::new(pw));
        target.has_password = true;
    } else if target.password.is_none()
        && matches!(target.scheme, conndoc_facts::Scheme::Redis | conndoc_facts::Scheme::Rediss)
    {
        if let Ok(pw) = std::env::var("REDISCLI_AUTH") {
            if !pw.is_empty() {
                target.password = Some(Secret::new(pw));
                target.has_password = true;
            }
        }
    }
    if let Some(ca) = &a.ca {
        conndoc_proto::tls::load_ca(ca).map_err(|e| usage(format!("--ca: {e}")))?;
    }
    if let Some(pid) = a.netns_pid {
        conndoc_host::netns::check_spec(&conndoc_host::NetnsSpec::Pid(pid)).map_err(usage)?;
    }
    if let Some(ns) = a.netns.as_ref().filter(|_| a.ssh.is_none()) {
        conndoc_host::netns::check_spec(&conndoc_host::NetnsSpec::Named(ns.clone())).map_err(usage)?;
    }
    // Fail before probing, not after, when a file cannot be written (a symlink, a FIFO).
    let _evidence_file = Reserved::check(a.evidence_out.as_deref(), "--evidence-out")?;
    let _pcap_file = Reserved::check(a.pcap.as_deref(), "--pcap")?;
    let ssh = match &a.ssh {
        Some(d) => Some(ssh_options(d, &a.remote_conndoc, &a.ssh_timeout)?),
        None => None,
    };
    if ssh.is_some() && a.netns_pid.is_some() {
        return Err(usage("--netns-pid names a process here; with --ssh use --netns NAME (a namespace on the server)"));
    }
    let opts = conndoc_engine::Options {
        ssh,
        timeout,
        family: if a.ipv4 {
            Some(Family::Ipv4)
        } else if a.ipv6 {
            Some(Family::Ipv6)
        } else {
            None
        },
        expect_process: a.expect,
        netns: a.netns,
        netns_pid: a.netns_pid,
        pcap_out: a.pcap,
        no_host: a.no_host,
        insecure: a.insecure,
        ca_file: a.ca,
        path: a.path,
    };
    let ev = conndoc_engine::gather(target, &opts).context("gathering evidence")?;
    if let Some(out) = &a.evidence_out {
        let json = serde_json::to_vec_pretty(&ev)?;
        conndoc_files::write_private(out, &json)?;
    }
    let report = conndoc_diagnose::diagnose(&ev);
    super::print_report(&report, a.json)?;
    Ok(report.exit_status() as u8)
}

/// An output file opened before probing only to prove it can be written. One that this run
/// created and left empty (a capture that could not start, a failed gather) is removed again
/// on drop, so "FILE was not written" holds: a pcap or evidence file is never empty.
struct Reserved(Option<PathBuf>);

impl Reserved {
    fn check(path: Option<&Path>, flag: &str) -> anyhow::Result<Reserved> {
        let Some(p) = path else { return Ok(Reserved(None)) };
        let existed = std::fs::symlink_metadata(p).is_ok();
        conndoc_files::open_private(p).map_err(|e| usage(format!("{flag}: {e}")))?;
        Ok(Reserved((!existed).then(|| p.to_path_buf())))
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.len() == 0) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Write a command's result to stdout. A reader that closed the pipe (`| head -1`) is not an
/// error: nothing more is written and the command keeps its status (docs/report.md); any
/// other failure (`> /dev/full`) is a [`super::StdoutError`], exit 3.
pub(super) fn write_out(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(super::StdoutError(e).into()),
        Ok(()) => Ok(()),
    }
}
