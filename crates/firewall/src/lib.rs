//! Reads nftables and iptables rulesets and evaluates which rule the probe's packet meets.
//!
//! Reading ([`read`]) dumps nftables over netlink ([`nfnl`]; `nft -j list ruleset` only when
//! that fails) and runs the `*-save` tools in the calling thread's network namespace; building
//! ([`build`]) and evaluating ([`Ruleset::evaluate`]) are pure and tested against recorded
//! output of those tools. A decoded nf_tables ruleset is kept by (namespace, generation)
//! and used again while the kernel's generation id is unchanged ([`cache`]).

pub mod cache;
pub mod conntrack;
pub mod ipt;
pub mod kube;
pub mod model;
pub mod nat;
pub mod nfnl;
pub mod nft;
pub mod read;

pub use model::{Packet, Ruleset};
pub use nat::NatEvaluation;
pub use read::{inspect_here, listeners_on_port, read, HostView, RawRulesets};

use conndoc_facts::firewall::{FirewallTool, RulesetSource};
use conndoc_facts::Family;
use std::collections::HashSet;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("reading the {tool} ruleset: {detail}")]
    Parse { tool: &'static str, detail: String },
    #[error("running `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("`{command}` did not finish within {ms} ms")]
    Timeout { command: String, ms: u128 },
}

/// Build one ruleset from everything read. Tables that iptables-nft manages are evaluated
/// as its save output has them (which its `xt` expressions in `nft -j` do not spell out):
/// read from the netlink dump ([`nfnl::iptnft`]), else from the tool.
pub fn build(raw: &RawRulesets) -> (Ruleset, Vec<RulesetSource>) {
    let mut rs = Ruleset::default();
    let mut sources = Vec::new();
    let mut skip = HashSet::new();
    // Why the dump's reading of a family's iptables-nft tables was not used.
    let dump_why = |tool: FirewallTool| {
        raw.nft_netlink.as_ref()?.iptables_nft.iter().find(|r| r.tool == tool)?.rules.as_ref().err().cloned()
    };
    for (i, (tool, out)) in raw.iptables.iter().enumerate() {
        let command = match dump_why(*tool) {
            Some(why) => {
                format!("{} (the nf_tables dump holds what conndoc does not read as it: {why})", tool.list_command())
            }
            None => tool.list_command().into(),
        };
        let family = match tool {
            FirewallTool::IptablesNft | FirewallTool::IptablesLegacy => Family::Ipv4,
            _ => Family::Ipv6,
        };
        match out {
            Ok(text) => {
                let part = ipt::parse_save(text, *tool, family, i + 1);
                if matches!(tool, FirewallTool::IptablesNft | FirewallTool::Ip6tablesNft) {
                    let fam = if family == Family::Ipv4 { "ip" } else { "ip6" };
                    for t in text.lines().filter_map(|l| l.strip_prefix('*')) {
                        skip.insert((fam.to_string(), t.trim().to_string()));
                    }
                }
                sources.push(RulesetSource {
                    tool: *tool,
                    command: command.clone(),
                    rules: part.rule_count,
                    error: None,
                    generation: None,
                    cached: false,
                });
                rs.extend(part);
            }
            Err(e) => sources.push(RulesetSource {
                tool: *tool,
                command,
                rules: 0,
                error: Some(e.clone()),
                generation: None,
                cached: false,
            }),
        }
    }
    let mut dumped = Vec::new();
    let nft_source = match &raw.nft_netlink {
        Some(nl) => {
            let part = nfnl::without_tables(&nl.ruleset, &skip);
            let mut n = part.rule_count;
            rs.extend(part);
            let command = match nl.cached {
                None => NETLINK_COMMAND.to_string(),
                Some(_) => cached_command(nl.generation),
            };
            for r in &nl.iptables_nft {
                let ran = raw.iptables.iter().any(|(t, _)| *t == r.tool);
                let (rules, error) = match &r.rules {
                    Ok(k) => (*k, None),
                    Err(_) if ran => continue,
                    Err(why) => {
                        (0, Some(format!("{why}; {} is not installed: read as nft rules", r.tool.list_command())))
                    }
                };
                n = n.saturating_sub(rules);
                dumped.push(RulesetSource {
                    tool: r.tool,
                    command: format!("{command}: iptables-nft's tables ({})", r.tool.list_command()),
                    rules,
                    error,
                    generation: Some(nl.generation),
                    cached: nl.cached.is_some(),
                });
            }
            RulesetSource {
                tool: FirewallTool::Nftables,
                command,
                rules: n,
                error: None,
                generation: Some(nl.generation),
                cached: nl.cached.is_some(),
            }
        }
        None => nft_json_source(raw, &skip, &mut rs),
    };
    sources.insert(0, nft_source);
    sources.splice(1..1, dumped);
    (rs, sources)
}

/// `RulesetSource::command` when the ruleset was read over netlink: what was read, and the
/// command a person runs to see the same.
pub const NETLINK_COMMAND: &str = "nf_tables netlink dump (nft list ruleset)";

/// `RulesetSource::command` when the netlink read found the generation unchanged since an
/// earlier read and used that read's rules (see [`cache`]).
pub fn cached_command(generation: u32) -> String {
    format!("nf_tables ruleset cached at generation {generation} (unchanged since it was read; nft list ruleset)")
}

/// The `nft -j list ruleset` fallback.
fn nft_json_source(raw: &RawRulesets, skip: &HashSet<(String, String)>, rs: &mut Ruleset) -> RulesetSource {
    let command = "nft -j list ruleset";
    match &raw.nft_json {
        Ok(json) => {
            let texts = raw.nft_text.as_deref().map(nft::parse_text).unwrap_or_default();
            match nft::parse_json(json, &texts, 0, skip) {
                Ok(part) => {
                    let n = part.rule_count;
                    rs.extend(part);
                    RulesetSource {
                        tool: FirewallTool::Nftables,
                        command: command.into(),
                        rules: n,
                        error: None,
                        generation: None,
                        cached: false,
                    }
                }
                Err(e) => RulesetSource {
                    tool: FirewallTool::Nftables,
                    command: command.into(),
                    rules: 0,
                    error: Some(e.to_string()),
                    generation: None,
                    cached: false,
                },
            }
        }
        Err(_) => RulesetSource {
            tool: FirewallTool::Nftables,
            command: command.into(),
            rules: 0,
            error: raw.nft_error(),
            generation: None,
            cached: false,
        },
    }
}
