//! `conndoc diagnose TARGET`: gather, reason, render; exit status per docs/report.md.

use super::usage;
use anyhow::Context;
use conndoc_facts::{Family, Secret, Target};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// host:port, [v6addr]:port, tcp://host:port, redis://[user:password@]host[:port][/db], rediss://…, http://…, https://…
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
    /// No colour in text output (NO_COLOR is honoured too).
    #[arg(long)]
    pub no_color: bool,
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
    /// TLS: do not verify the server certificate (the facts are still reported).
    #[arg(long)]
    pub insecure: bool,
    /// TLS: trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Redis: read the password from this file (else the URL, else REDISCLI_AUTH).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let mut target = Target::parse(&a.target).map_err(|e| usage(e.to_string()))?;
    let timeout = super::parse_timeout(&a.timeout)?;
    if let Some(p) = &a.password_file {
        let text =
            std::fs::read_to_string(p).map_err(|e| usage(format!("cannot read password file {}: {e}", p.display())))?;
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
        std::fs::metadata(ca).map_err(|e| usage(format!("cannot read CA file {}: {e}", ca.display())))?;
    }
    if let Some(pid) = a.netns_pid {
        let p = format!("/proc/{pid}/ns/net");
        std::fs::metadata(&p).map_err(|e| usage(format!("--netns-pid {pid}: cannot open {p}: {e}")))?;
    }
    if let Some(ns) = &a.netns {
        let path = if ns.contains('/') { PathBuf::from(ns) } else { PathBuf::from("/run/netns").join(ns) };
        std::fs::metadata(&path).map_err(|e| usage(format!("--netns {ns}: cannot open {}: {e}", path.display())))?;
    }
    if let Some(out) = &a.evidence_out {
        // Fail before probing, not after, when the file cannot be written.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .map_err(|e| usage(format!("cannot write evidence file {}: {e}", out.display())))?;
    }
    let opts = conndoc_engine::Options {
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
    };
    let ev = conndoc_engine::gather(target, &opts).context("gathering evidence")?;
    if let Some(out) = &a.evidence_out {
        let json = serde_json::to_vec_pretty(&ev)?;
        std::fs::write(out, json).with_context(|| format!("writing evidence to {}", out.display()))?;
    }
    let report = conndoc_diagnose::diagnose(&ev);
    super::print_report(&report, a.json, a.no_color)?;
    Ok(report.exit_status() as u8)
}

/// Whether text output should be coloured: a terminal, no --no-color, no NO_COLOR.
pub fn use_color(no_color: bool) -> bool {
    !no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

pub(super) fn write_out(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        // A closed pipe (`| head`) is not an error worth a status.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
