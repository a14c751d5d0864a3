//! `nft -j list ruleset`, read tolerantly: an expression conndoc does not know makes that
//! one rule "not understood" (reported), never the whole read fail. Rule text for people
//! comes from `nft -a list ruleset` (matched by handle).

use crate::model::{
    Action, BaseChain, ChainId, Cond, Elem, Key, NatAction, NatKind, Op, RouteType, Rule, Ruleset, IPPROTO_TCP,
};
use crate::FirewallError;
use conndoc_facts::firewall::{FirewallTool, Hook, RejectWith, RuleRef};
use conndoc_facts::Family;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Rule texts from `nft -a list ruleset`: (family, table, chain, handle) → rule text.
pub type RuleTexts = HashMap<(String, String, String, u64), String>;

/// Read the rule lines (those ending in `# handle N` inside a chain block) of
/// `nft -a list ruleset`.
pub fn parse_text(text: &str) -> RuleTexts {
    let mut out = HashMap::new();
    let (mut family, mut table) = (String::new(), String::new());
    let mut chain: Option<String> = None;
    let mut depth_in_other = 0usize;
    for raw in text.lines() {
        let line = raw.trim();
        let (body, handle) = match line.rsplit_once("# handle ") {
            Some((b, h)) => (b.trim(), h.trim().parse::<u64>().ok()),
            None => (line, None),
        };
        if let Some(rest) = body.strip_prefix("table ") {
            let mut it = rest.split_whitespace();
            family = it.next().unwrap_or_default().to_string();
            table = it.next().unwrap_or_default().to_string();
            chain = None;
            continue;
        }
        if chain.is_none() && depth_in_other == 0 {
            if let Some(rest) = body.strip_prefix("chain ") {
                chain = rest.split_whitespace().next().map(str::to_string);
                continue;
            }
            if body.ends_with('{') {
                // set, map, flowtable, counter … blocks
                depth_in_other += 1;
                continue;
            }
        }
        if body == "}" {
            if depth_in_other > 0 {
                depth_in_other -= 1;
            } else if chain.is_some() {
                chain = None;
            }
            continue;
        }
        if depth_in_other > 0 && body.ends_with('{') {
            depth_in_other += 1;
        }
        if let (Some(c), Some(h)) = (&chain, handle) {
            out.insert((family.clone(), table.clone(), c.clone(), h), body.to_string());
        }
    }
    out
}

struct SetDef {
    elems: Vec<Elem>,
    /// A map's elements as read (`[key, data]`), for a dnat map that names it.
    raw: Vec<Value>,
    /// Why the set cannot be used (concatenated type, unknown element form).
    problem: Option<String>,
}

/// Parse `nft -j list ruleset`. `source` numbers this ruleset among others; tables named in
/// `skip_tables` ((family, table), e.g. iptables-nft's own) are left to their own reader.
pub fn parse_json(
    json: &str,
    texts: &RuleTexts,
    source: usize,
    skip_tables: &HashSet<(String, String)>,
) -> Result<Ruleset, FirewallError> {
    let root: Value = serde_json::from_str(json).map_err(|e| FirewallError::Parse {
        tool: FirewallTool::Nftables.as_str(),
        detail: format!("not JSON: {e}"),
    })?;
    let items = root.get("nftables").and_then(Value::as_array).ok_or_else(|| FirewallError::Parse {
        tool: FirewallTool::Nftables.as_str(),
        detail: "no \"nftables\" array".into(),
    })?;

    let mut rs = Ruleset::default();
    let mut sets: HashMap<(String, String, String), SetDef> = HashMap::new();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();

    // Sets and chains first: rules refer to them.
    for item in items {
        if let Some(set) = item.get("set").or_else(|| item.get("map")) {
            let key = (s(set, "family"), s(set, "table"), s(set, "name"));
            let mut def = SetDef { elems: Vec::new(), raw: Vec::new(), problem: None };
            if set.get("type").is_some_and(Value::is_array) {
                def.problem = Some(format!("set @{} has a concatenated type", key.2));
            }
            for e in set.get("elem").and_then(Value::as_array).into_iter().flatten() {
                if item.get("map").is_some() {
                    def.raw.push(e.clone());
                }
                let e = if item.get("map").is_some() { e.as_array().and_then(|a| a.first()).unwrap_or(e) } else { e };
                match elem(e) {
                    Some(x) => def.elems.push(x),
                    None => def.problem = Some(format!("set @{} has an element conndoc cannot read: {e}", key.2)),
                }
            }
            sets.insert(key, def);
        }
        if let Some(ch) = item.get("chain") {
            let (family, table, name) = (s(ch, "family"), s(ch, "table"), s(ch, "name"));
            if skip_tables.contains(&(family.clone(), table.clone())) {
                continue;
            }
            let id: ChainId = (source, family.clone(), table.clone(), name.clone());
            rs.chains.entry(id.clone()).or_default();
            let hook = match ch.get("hook").and_then(Value::as_str) {
                Some("prerouting") => Hook::Prerouting,
                Some("input") => Hook::Input,
                Some("forward") => Hook::Forward,
                Some("output") => Hook::Output,
                Some("postrouting") => Hook::Postrouting,
                _ => continue,
            };
            // Address translation chains do not filter: they are walked apart.
            let nat = ch.get("type").and_then(Value::as_str) == Some("nat");
            let fam = match family.as_str() {
                "ip" => Some(Family::Ipv4),
                "ip6" => Some(Family::Ipv6),
                "inet" => None,
                _ => continue, // bridge, arp, netdev: not on the IP path
            };
            let policy_accept = ch.get("policy").and_then(Value::as_str) != Some("drop");
            let policy = RuleRef {
                tool: FirewallTool::Nftables,
                family: family.clone(),
                table: table.clone(),
                chain: name.clone(),
                handle: None,
                position: None,
                line: None,
                policy: true,
                text: format!("policy {};", if policy_accept { "accept" } else { "drop" }),
            };
            let base = BaseChain {
                hook,
                priority: priority(ch.get("prio")),
                family: fam,
                chain: id,
                policy: (policy, policy_accept),
            };
            if nat {
                rs.nat_bases.push(base);
            } else {
                rs.bases.push(base);
            }
        }
    }

    for item in items {
        let Some(r) = item.get("rule") else { continue };
        let (family, table, chain) = (s(r, "family"), s(r, "table"), s(r, "chain"));
        if skip_tables.contains(&(family.clone(), table.clone())) {
            continue;
        }
        let handle = r.get("handle").and_then(Value::as_u64);
        let text = handle
            .and_then(|h| texts.get(&(family.clone(), table.clone(), chain.clone(), h)).cloned())
            .unwrap_or_else(|| r.get("expr").map(|e| e.to_string()).unwrap_or_default());
        let id: ChainId = (source, family.clone(), table.clone(), chain.clone());
        let ch = std::sync::Arc::make_mut(rs.chains.entry(id).or_default());
        let reference = RuleRef {
            tool: FirewallTool::Nftables,
            family: family.clone(),
            table: table.clone(),
            chain: chain.clone(),
            handle,
            position: Some(u32::try_from(ch.rules.len() + 1).unwrap_or(u32::MAX)),
            line: None,
            policy: false,
            text,
        };
        let mut rule = Rule { reference, conds: Vec::new(), action: Action::Continue, not_understood: None };
        let mut split = None;
        let exprs = r.get("expr").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for e in exprs {
            if let Err(why) = statement(e, &mut rule, &mut split, &sets, &family, &table) {
                rule.not_understood.get_or_insert(why);
            }
        }
        if rule.not_understood.is_some() {
            rs.not_understood_total += 1;
        }
        rs.rule_count += 1;
        match split {
            // A dnat map: one rule per element, all with the rule's own reference.
            Some(entries) if rule.not_understood.is_none() => {
                for (more, action) in entries {
                    let mut conds = rule.conds.clone();
                    conds.extend(more);
                    ch.rules.push(Rule { reference: rule.reference.clone(), conds, action, not_understood: None });
                }
            }
            _ => ch.rules.push(rule),
        }
    }
    Ok(rs)
}

fn priority(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.as_str() {
            "raw" => -300,
            "mangle" => -150,
            "dstnat" => -100,
            "filter" => 0,
            "security" => 50,
            "srcnat" => 100,
            _ => 0,
        },
        _ => 0,
    }
}

/// One statement of a rule: a match adds a condition, a verdict sets the action.
fn statement(
    e: &Value,
    rule: &mut Rule,
    split: &mut Option<Vec<(Vec<Cond>, Action)>>,
    sets: &HashMap<(String, String, String), SetDef>,
    family: &str,
    table: &str,
) -> Result<(), String> {
    let Some((name, body)) = e.as_object().and_then(|o| o.iter().next()) else {
        return Err(format!("unreadable statement {e}"));
    };
    let verdict_seen = !matches!(rule.action, Action::Continue);
    let set_action = |rule: &mut Rule, a: Action| {
        if !verdict_seen {
            rule.action = a;
        }
    };
    match name.as_str() {
        "match" => {
            rule.conds.extend(match_cond(body, sets, family, table)?);
        }
        "accept" => set_action(rule, Action::Accept),
        "drop" => set_action(rule, Action::Drop),
        "return" => set_action(rule, Action::Return),
        "continue" => {}
        "jump" | "goto" => {
            let target = body.get("target").and_then(Value::as_str).ok_or("jump without a target")?.to_string();
            set_action(rule, if name == "jump" { Action::Jump(target) } else { Action::Goto(target) });
        }
        "reject" => {
            let ty = body.get("type").and_then(Value::as_str);
            let code = body.get("expr").and_then(Value::as_str);
            let with = match (ty, code) {
                (Some("tcp reset"), _) => RejectWith::TcpReset,
                (Some(t), c) => RejectWith::Icmp { family: t.into(), code: c.unwrap_or("port-unreachable").into() },
                (None, _) => RejectWith::Icmp {
                    family: match family {
                        "ip" => "icmp",
                        "ip6" => "icmpv6",
                        _ => "icmpx",
                    }
                    .into(),
                    code: "port-unreachable".into(),
                },
            };
            // In an inet chain `reject with icmp(v6)` only applies to its own family; nft
            // adds that dependency silently (and leaves it out of the JSON).
            if let RejectWith::Icmp { family: f, .. } = &with {
                let fam = match f.as_str() {
                    "icmp" => Some(Family::Ipv4),
                    "icmpv6" => Some(Family::Ipv6),
                    _ => None,
                };
                if let Some(fam) = fam {
                    rule.conds.push(Cond::Cmp { key: Key::NfProto, op: Op::In, elems: vec![Elem::Fam(fam)] });
                }
            }
            set_action(rule, Action::Reject(with));
        }
        "dnat" | "redirect" => {
            let fam = match body.get("family").and_then(Value::as_str) {
                Some("ip") => Some(Family::Ipv4),
                Some("ip6") => Some(Family::Ipv6),
                _ => None,
            };
            // `dnat ip to …` in an inet chain translates IPv4 packets only.
            if let Some(f) = fam.filter(|_| family == "inet") {
                rule.conds.push(Cond::Cmp { key: Key::NfProto, op: Op::In, elems: vec![Elem::Fam(f)] });
            }
            // `dnat to tcp dport map { … }` / `@m`: one rule per element (a key not in the
            // map ends the rule), each translating to its element's data.
            if let Some(m) = body.get("addr").and_then(|a| a.get("map")).filter(|_| name == "dnat") {
                if !verdict_seen && split.is_none() {
                    *split = Some(nat_map(m, sets, family, table, nat_flag(body, "netmap"))?);
                }
                return Ok(());
            }
            // `redirect to :tcp dport map { 83 : 8083 }`: one rule per element too.
            if let Some(m) = body.get("port").and_then(|a| a.get("map")).filter(|_| name == "redirect") {
                if !verdict_seen && split.is_none() {
                    *split = Some(redirect_map(m, sets, family, table)?);
                }
                return Ok(());
            }
            let nat = nat_statement(name, body)?;
            set_action(rule, Action::Nat(nat));
        }
        "snat" | "masquerade" => set_action(rule, Action::Nat(NatAction::Snat)),
        // Statements that do not decide the packet's fate.
        "counter" | "log" | "comment" | "mangle" | "notrack" | "set" | "nftrace" | "meta" | "ct" | "quota" => {
            if name == "quota" {
                return Err("quota (depends on traffic so far)".into());
            }
        }
        "limit" => return Err("rate limit (depends on traffic so far)".into()),
        "xt" => {
            let n = body.get("name").and_then(Value::as_str).unwrap_or("?");
            return Err(format!("iptables extension `{n}` (xt) in an nft rule"));
        }
        "vmap" => return Err("verdict map".into()),
        other => return Err(format!("statement `{other}`")),
    }
    Ok(())
}

/// `{"dnat": {"family": "ip", "addr": "10.77.1.2", "port": 6379}}`, `{"redirect": {"port": 6390}}`
/// (or null), with ranges (`{"range": [a, b]}`, an address `{"prefix": …}`): the translation.
/// Why `dnat prefix to KEY map { … }` is not followed (the readers say it alike).
pub(crate) const NETMAP_MAP: &str = "dnat prefix through a map (a prefix for a prefix per element)";

/// Whether a nat statement's `flags` (a string or a list) holds `f`.
fn nat_flag(body: &Value, f: &str) -> bool {
    match body.get("flags") {
        Some(Value::String(s)) => s == f,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(f)),
        _ => false,
    }
}

fn nat_statement(name: &str, body: &Value) -> Result<NatAction, String> {
    let kind = if name == "dnat" { NatKind::Dnat } else { NatKind::Redirect };
    let unfollowed = |why: String| Ok(NatAction::Unfollowed { kind, why });
    let port_num = |v: &Value| -> Result<u16, String> {
        v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| format!("{name} port {v}"))
    };
    let ports = match body.get("port") {
        None | Some(Value::Null) => None,
        Some(n @ Value::Number(_)) => {
            let p = port_num(n)?;
            Some((p, p))
        }
        Some(Value::Object(o)) if o.contains_key("range") => {
            let r = o["range"].as_array().ok_or_else(|| format!("{name} port range {}", range_text(o)))?;
            match (r.first(), r.get(1)) {
                (Some(a), Some(b)) => Some((port_num(a)?, port_num(b)?)),
                _ => return Err(format!("{name} port range {}", range_text(o))),
            }
        }
        Some(v) => return unfollowed(format!("{name} to the port {v}")),
    };
    if kind == NatKind::Redirect {
        return Ok(match ports {
            None => NatAction::Redirect { port: None },
            Some((p, q)) if p == q => NatAction::Redirect { port: Some(p) },
            Some(r) => NatAction::RedirectRange { ports: r },
        });
    }
    let ip = |v: &Value| -> Result<IpAddr, String> {
        v.as_str().and_then(|a| a.parse().ok()).ok_or_else(|| format!("dnat address {v}"))
    };
    let addrs = match body.get("addr") {
        Some(a @ Value::String(_)) => (ip(a)?, ip(a)?),
        Some(Value::Object(o)) if o.contains_key("range") => {
            let r = o["range"].as_array().ok_or_else(|| format!("dnat address range {}", range_text(o)))?;
            match (r.first(), r.get(1)) {
                (Some(a), Some(b)) => (ip(a)?, ip(b)?),
                _ => return Err(format!("dnat address range {}", range_text(o))),
            }
        }
        // nft prints a range that is a prefix (`10.77.1.2-10.77.1.3`) as `10.77.1.2/31`.
        Some(Value::Object(o)) if o.contains_key("prefix") => {
            let p = &o["prefix"];
            let a = ip(p.get("addr").unwrap_or(&Value::Null))?;
            let len = p.get("len").and_then(Value::as_u64).ok_or_else(|| format!("dnat prefix {p}"))?;
            (a, prefix_last(a, len).ok_or_else(|| format!("dnat prefix {p}"))?)
        }
        Some(v) => return unfollowed(format!("dnat to {v}")),
        // `dnat to :P`: the port alone, the packet's own address kept.
        None => match ports {
            Some(ports) => return Ok(NatAction::DnatPort { ports }),
            None => return unfollowed("dnat without an address".into()),
        },
    };
    if addrs.0.is_ipv4() != addrs.1.is_ipv4() {
        return Err("dnat to an address range across families".into());
    }
    // `dnat prefix to A/len`: one address for one.
    if nat_flag(body, "netmap") {
        return match ports {
            Some((p, q)) if p != q => unfollowed("dnat prefix to a port range".into()),
            ports => Ok(NatAction::Netmap { addrs, port: ports.map(|p| p.0) }),
        };
    }
    Ok(match ports {
        None if addrs.0 == addrs.1 => NatAction::Dnat { addr: addrs.0, port: None },
        Some((p, q)) if p == q && addrs.0 == addrs.1 => NatAction::Dnat { addr: addrs.0, port: Some(p) },
        ports => NatAction::DnatRange { addrs, ports },
    })
}

/// The last address of `a/len`.
fn prefix_last(a: IpAddr, len: u64) -> Option<IpAddr> {
    match a {
        IpAddr::V4(v) if len <= 32 => {
            let host = u32::MAX.checked_shr(len as u32).unwrap_or(0);
            Some(IpAddr::V4((u32::from(v) | host).into()))
        }
        IpAddr::V6(v) if len <= 128 => {
            let host = u128::MAX.checked_shr(len as u32).unwrap_or(0);
            Some(IpAddr::V6((u128::from(v) | host).into()))
        }
        _ => None,
    }
}

/// `dnat to KEY map { K : ADDR[ . PORT], … }` or `map @name`: per element, the conditions
/// its key puts on the packet and the translation to its data.
fn nat_map(
    m: &Value,
    sets: &HashMap<(String, String, String), SetDef>,
    family: &str,
    table: &str,
    netmap: bool,
) -> Result<Vec<(Vec<Cond>, Action)>, String> {
    let key = m.get("key").ok_or("dnat map without a key")?;
    let elems: Vec<Value> = match m.get("data") {
        Some(Value::String(n)) if n.starts_with('@') => {
            let name = &n[1..];
            let def = sets
                .get(&(family.to_string(), table.to_string(), name.to_string()))
                .ok_or_else(|| format!("map @{name} not found"))?;
            def.raw.clone()
        }
        Some(Value::Object(o)) if o.contains_key("set") => o["set"].as_array().cloned().unwrap_or_default(),
        d => return Err(format!("dnat map data {}", d.cloned().unwrap_or(Value::Null))),
    };
    let parts = |v: &Value| -> Vec<Value> {
        match v.get("concat").and_then(Value::as_array) {
            Some(a) => a.clone(),
            None => vec![v.clone()],
        }
    };
    let key_parts = parts(key);
    let backend = |v: &Value| -> Result<(IpAddr, Option<u16>), String> {
        let data = parts(v);
        let addr = data
            .first()
            .and_then(Value::as_str)
            .and_then(|a| a.parse::<IpAddr>().ok())
            .ok_or_else(|| format!("dnat map data {v}"))?;
        let port = match data.get(1) {
            None => None,
            Some(p) => {
                Some(p.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| format!("dnat map port {p}"))?)
            }
        };
        Ok((addr, port))
    };
    // `numgen inc mod N map { 0 : A, … }` (or `jhash …`, `symhash …`): the kernel picks one
    // element per connection (per flow for a hash); followed only when every value the
    // generator makes has one.
    if let Some(g) = key.get("numgen").or_else(|| key.get("jhash")).or_else(|| key.get("symhash")) {
        let n = g.get("mod").and_then(Value::as_u64).ok_or("numgen without mod")?;
        let offset = g.get("offset").and_then(Value::as_u64).unwrap_or(0);
        let mut by_key = Vec::new();
        for e in &elems {
            match e.as_array().map(Vec::as_slice) {
                Some([k, v]) => by_key.push((k.as_u64().ok_or_else(|| format!("numgen map key {k}"))?, backend(v)?)),
                _ => return Err(format!("dnat map element {e}")),
            }
        }
        by_key.sort_by_key(|(k, _)| *k);
        let keys: Vec<u64> = by_key.iter().map(|(k, _)| *k).collect();
        if keys != (offset..offset + n).collect::<Vec<_>>() {
            return Err(format!("map holds {} of the {n} values {} makes", keys.len(), json_text(key)));
        }
        let backends = by_key.into_iter().map(|(_, b)| b).collect();
        return Ok(vec![(Vec::new(), Action::Nat(NatAction::DnatChoice { backends }))]);
    }
    let mut out = Vec::new();
    for e in &elems {
        let (k, v) = match e.as_array().map(Vec::as_slice) {
            Some([k, v]) => (k, v),
            _ => return Err(format!("dnat map element {e}")),
        };
        let kv = parts(k);
        if kv.len() != key_parts.len() {
            return Err(format!("dnat map element {e}: its key does not match {key}"));
        }
        let mut conds = Vec::new();
        for (left, right) in key_parts.iter().zip(&kv) {
            conds.extend(match_cond(
                &serde_json::json!({ "op": "==", "left": left, "right": right }),
                sets,
                family,
                table,
            )?);
        }
        // An address range as data (`10.77.1.2-10.77.1.3`, an aligned one printed as a
        // prefix): the kernel picks one address of it per connection.
        let range = match v.get("range").and_then(Value::as_array).map(Vec::as_slice) {
            Some([a, b]) => Some((a.as_str().and_then(|a| a.parse().ok()), b.as_str().and_then(|b| b.parse().ok()))),
            _ => v.get("prefix").map(|p| {
                let a: Option<IpAddr> = p.get("addr").and_then(Value::as_str).and_then(|a| a.parse().ok());
                let last = a.zip(p.get("len").and_then(Value::as_u64)).and_then(|(a, l)| prefix_last(a, l));
                (a, last)
            }),
        };
        if let Some(r) = range {
            let (Some(a), Some(b)) = r else { return Err(format!("dnat map data {v}")) };
            let nat = if netmap {
                NatAction::Netmap { addrs: (a, b), port: None }
            } else {
                NatAction::DnatRange { addrs: (a, b), ports: None }
            };
            out.push((conds, Action::Nat(nat)));
            continue;
        }
        if netmap {
            return Err(format!("dnat prefix to map data {v}"));
        }
        let (addr, port) = backend(v)?;
        let element = format!("{} : {}", json_text(k), json_text(v));
        out.push((conds, Action::Nat(NatAction::DnatMapped { addr, port, element })));
    }
    Ok(out)
}

/// `redirect to :KEY map { K : PORT, … }`: per element, the conditions its key puts on the
/// packet and the redirect to its port.
fn redirect_map(
    m: &Value,
    sets: &HashMap<(String, String, String), SetDef>,
    family: &str,
    table: &str,
) -> Result<Vec<(Vec<Cond>, Action)>, String> {
    let key = m.get("key").ok_or("redirect map without a key")?;
    let elems: Vec<Value> = match m.get("data") {
        Some(Value::String(n)) if n.starts_with('@') => {
            let name = &n[1..];
            sets.get(&(family.to_string(), table.to_string(), name.to_string()))
                .ok_or_else(|| format!("map @{name} not found"))?
                .raw
                .clone()
        }
        Some(Value::Object(o)) if o.contains_key("set") => o["set"].as_array().cloned().unwrap_or_default(),
        d => return Err(format!("redirect map data {}", d.cloned().unwrap_or(Value::Null))),
    };
    let mut out = Vec::new();
    for e in &elems {
        let (k, v) = match e.as_array().map(Vec::as_slice) {
            Some([k, v]) => (k, v),
            _ => return Err(format!("redirect map element {e}")),
        };
        let conds = match_cond(&serde_json::json!({ "op": "==", "left": key, "right": k }), sets, family, table)?;
        let port = v.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or_else(|| format!("redirect map port {v}"))?;
        let element = format!("{} : {port}", json_text(k));
        out.push((conds, Action::Nat(NatAction::RedirectMapped { port, element })));
    }
    Ok(out)
}

/// A value as nft prints it: `16379`, `10.77.1.2 . 6379`, `10.0.0.0/8`, `1-2`.
fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) if o.contains_key("concat") => {
            o["concat"].as_array().into_iter().flatten().map(json_text).collect::<Vec<_>>().join(" . ")
        }
        Value::Object(o) if o.contains_key("prefix") => {
            let p = &o["prefix"];
            format!(
                "{}/{}",
                json_text(p.get("addr").unwrap_or(&Value::Null)),
                json_text(p.get("len").unwrap_or(&Value::Null))
            )
        }
        Value::Object(o) if o.contains_key("range") => {
            o["range"].as_array().into_iter().flatten().map(json_text).collect::<Vec<_>>().join("-")
        }
        v => v.to_string(),
    }
}

fn match_cond(
    m: &Value,
    sets: &HashMap<(String, String, String), SetDef>,
    family: &str,
    table: &str,
) -> Result<Vec<Cond>, String> {
    let op = match m.get("op").and_then(Value::as_str).unwrap_or("==") {
        "==" | "in" => Op::In,
        "!=" => Op::NotIn,
        "<" => Op::Lt,
        ">" => Op::Gt,
        "<=" => Op::Le,
        ">=" => Op::Ge,
        o => return Err(format!("operator `{o}`")),
    };
    let left = m.get("left").ok_or("match without left side")?;
    let right = m.get("right").ok_or("match without right side")?;

    // `tcp flags syn` / `tcp flags fin,rst` (op "in"): any of those flags set;
    // `tcp flags == syn`: exactly those.
    if is_payload(left, "tcp", "flags") {
        let value = tcp_flags(right).ok_or_else(|| format!("tcp flags {right}"))?;
        return Ok(vec![match m.get("op").and_then(Value::as_str) {
            Some("in") => Cond::Masked { key: Key::TcpFlags, mask: value, op: Op::NotIn, value: 0 },
            _ => Cond::Masked { key: Key::TcpFlags, mask: 0xff, op, value },
        }]);
    }

    // `tcp flags & (fin|syn|rst|ack) == syn`
    if let Some(and) = left.get("&").and_then(Value::as_array) {
        if and.len() == 2 && is_payload(&and[0], "tcp", "flags") {
            let mask = tcp_flags(&and[1]).ok_or_else(|| format!("tcp flag mask {}", and[1]))?;
            let value = tcp_flags(right).ok_or_else(|| format!("tcp flags {right}"))?;
            return Ok(vec![Cond::Masked { key: Key::TcpFlags, mask, op, value }]);
        }
        return Err(format!("bitwise match on {}", and[0]));
    }

    // `fib daddr type local` (what iptables-nft writes for `-m addrtype --dst-type LOCAL`).
    if let Some(fib) = left.get("fib") {
        let flags: Vec<&str> = match fib.get("flags") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            _ => Vec::new(),
        };
        if fib.get("result").and_then(Value::as_str) != Some("type") || flags != ["daddr"] {
            return Err(format!("fib {fib}"));
        }
        let names: Vec<&Value> = match right {
            Value::Object(o) if o.contains_key("set") => {
                o["set"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
            }
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        let elems = names
            .into_iter()
            .map(|v| {
                v.as_str().and_then(RouteType::from_name).map(Elem::RouteType).ok_or_else(|| format!("fib type {v}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !matches!(op, Op::In | Op::NotIn) {
            return Err("ordered comparison of fib type".into());
        }
        return Ok(vec![Cond::Cmp { key: Key::DAddrType, op, elems }]);
    }

    let mut implied = None;
    let key = if let Some(p) = left.get("payload") {
        let proto = p.get("protocol").and_then(Value::as_str).unwrap_or_default();
        let field = p.get("field").and_then(Value::as_str).unwrap_or_default();
        match (proto, field) {
            ("ip", "saddr") | ("ip6", "saddr") | ("ip", "daddr") | ("ip6", "daddr") => {
                // An ip match in an inet chain also says "IPv4 only" (nft adds that
                // dependency), so `ip saddr != …` never matches an IPv6 packet.
                implied = Some(if proto == "ip" { Family::Ipv4 } else { Family::Ipv6 });
                if field == "saddr" {
                    Key::SAddr
                } else {
                    Key::DAddr
                }
            }
            ("ip", "protocol") | ("ip6", "nexthdr") => {
                implied = Some(if proto == "ip" { Family::Ipv4 } else { Family::Ipv6 });
                Key::L4Proto
            }
            ("tcp" | "th", "dport") => Key::DPort,
            ("tcp" | "th", "sport") => Key::SPort,
            ("tcp", "flags") => Key::TcpFlags,
            ("udp" | "udplite" | "sctp" | "dccp" | "icmp" | "icmpv6" | "esp" | "ah" | "igmp", _) => {
                // The probe is TCP: a match on another protocol's header never holds
                // (and `!=` on it never holds either: the header is absent).
                return Ok(vec![Cond::Never]);
            }
            _ => return Err(format!("payload {proto} {field}")),
        }
    } else if let Some(mk) = left.get("meta").and_then(|x| x.get("key")).and_then(Value::as_str) {
        match mk {
            "l4proto" => Key::L4Proto,
            "nfproto" => Key::NfProto,
            "protocol" => Key::NfProto,
            "iifname" | "iif" => Key::Iifname,
            "oifname" | "oif" => Key::Oifname,
            k => return Err(format!("meta {k}")),
        }
    } else if let Some(ck) = left.get("ct").and_then(|x| x.get("key")).and_then(Value::as_str) {
        match ck {
            "state" => Key::CtState,
            k => return Err(format!("ct {k}")),
        }
    } else {
        return Err(format!("match on {left}"));
    };

    let elems = right_elems(right, key, sets, family, table)?;
    // `ct state established,related` is a bitmask test: any listed state.
    let mut out = Vec::new();
    if let Some(f) = implied {
        out.push(Cond::Cmp { key: Key::NfProto, op: Op::In, elems: vec![Elem::Fam(f)] });
    }
    out.push(Cond::Cmp { key, op, elems });
    Ok(out)
}

fn is_payload(v: &Value, proto: &str, field: &str) -> bool {
    v.get("payload").is_some_and(|p| {
        p.get("protocol").and_then(Value::as_str) == Some(proto)
            && p.get("field").and_then(Value::as_str) == Some(field)
    })
}

fn tcp_flags(v: &Value) -> Option<u64> {
    let one = |s: &str| -> Option<u64> {
        Some(match s {
            "fin" => 0x01,
            "syn" => 0x02,
            "rst" => 0x04,
            "psh" => 0x08,
            "ack" => 0x10,
            "urg" => 0x20,
            "ecn" => 0x40,
            "cwr" => 0x80,
            _ => return None,
        })
    };
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.split(['|', ',']).map(|p| one(p.trim())).sum(),
        Value::Array(a) => a.iter().map(tcp_flags).sum(),
        Value::Object(o) => o.get("|").and_then(Value::as_array).map(|a| a.iter().map(tcp_flags).sum())?,
        _ => None,
    }
}

fn right_elems(
    right: &Value,
    key: Key,
    sets: &HashMap<(String, String, String), SetDef>,
    family: &str,
    table: &str,
) -> Result<Vec<Elem>, String> {
    if let Some(name) = right.as_str().and_then(|s| s.strip_prefix('@')) {
        let def = sets
            .get(&(family.to_string(), table.to_string(), name.to_string()))
            .ok_or_else(|| format!("set @{name} not found"))?;
        if let Some(p) = &def.problem {
            return Err(p.clone());
        }
        return def.elems.iter().map(|e| coerce(e.clone(), key)).collect();
    }
    let list: Vec<&Value> = match right {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("set") => {
            o["set"].as_array().map(|a| a.iter().collect()).unwrap_or_default()
        }
        v => vec![v],
    };
    list.into_iter().map(|v| elem(v).ok_or_else(|| format!("value {v}")).and_then(|e| coerce(e, key))).collect()
}

/// Read a literal as a generic element.
fn elem(v: &Value) -> Option<Elem> {
    match v {
        Value::Number(n) => n.as_u64().map(Elem::Int),
        Value::String(s) => Some(match s.parse::<IpAddr>() {
            Ok(a) => Elem::Addr(a),
            Err(_) => Elem::Name(s.clone()),
        }),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr = p.get("addr")?.as_str()?.parse().ok()?;
                let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
                Some(Elem::Prefix(addr, len))
            } else if let Some(r) = o.get("range").and_then(Value::as_array) {
                match (elem(r.first()?)?, elem(r.get(1)?)?) {
                    (Elem::Int(a), Elem::Int(b)) => Some(Elem::IntRange(a, b)),
                    (Elem::Addr(a), Elem::Addr(b)) => Some(Elem::AddrRange(a, b)),
                    _ => None,
                }
            } else if let Some(e) = o.get("elem") {
                // {"elem": {"val": X, "timeout": …}}
                elem(e.get("val")?)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Give a generic element the meaning of the key it is compared with.
fn coerce(e: Elem, key: Key) -> Result<Elem, String> {
    match (key, &e) {
        (Key::L4Proto, Elem::Name(n)) => Ok(Elem::Int(proto_number(n).ok_or_else(|| format!("protocol {n}"))?)),
        (Key::DPort | Key::SPort, Elem::Name(n)) => {
            Ok(Elem::Int(service_port(n).ok_or_else(|| format!("service name {n}"))?))
        }
        (Key::CtState, Elem::Name(n)) => Ok(Elem::State(n.clone())),
        (Key::NfProto, Elem::Name(n)) => match n.as_str() {
            "ipv4" | "ip" => Ok(Elem::Fam(Family::Ipv4)),
            "ipv6" | "ip6" => Ok(Elem::Fam(Family::Ipv6)),
            _ => Err(format!("family {n}")),
        },
        (Key::Iifname | Key::Oifname, Elem::Name(_)) => Ok(e),
        (Key::SAddr | Key::DAddr, Elem::Addr(_) | Elem::Prefix(..) | Elem::AddrRange(..)) => Ok(e),
        (Key::L4Proto | Key::DPort | Key::SPort | Key::TcpFlags, Elem::Int(_) | Elem::IntRange(..)) => Ok(e),
        _ => Err(format!("{e:?} compared with {key:?}")),
    }
}

pub(crate) fn proto_number(n: &str) -> Option<u64> {
    Some(match n {
        "tcp" => IPPROTO_TCP,
        "udp" => 17,
        "icmp" => 1,
        "ipv6-icmp" | "icmpv6" | "icmp6" => 58,
        "sctp" => 132,
        "udplite" => 136,
        "dccp" => 33,
        "esp" => 50,
        "ah" => 51,
        "gre" => 47,
        "igmp" => 2,
        n => return n.parse().ok(),
    })
}

/// A few service names nft may print instead of numbers (with `-S` off they are numbers).
fn service_port(n: &str) -> Option<u64> {
    Some(match n {
        "ssh" => 22,
        "http" => 80,
        "https" => 443,
        "redis" => 6379,
        "domain" => 53,
        "smtp" => 25,
        "postgresql" => 5432,
        "mysql" => 3306,
        n => return n.parse().ok(),
    })
}

/// An nft -j `{"range": [A, B]}` as `A-B`.
fn range_text(o: &serde_json::Map<String, Value>) -> String {
    let r: Vec<String> =
        o["range"].as_array().into_iter().flatten().map(|v| v.to_string().trim_matches('"').to_string()).collect();
    r.join("-")
}
