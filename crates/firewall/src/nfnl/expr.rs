//! nf_tables messages and rule expressions, parsed from the bytes the kernel sends.
//! Integer attributes are big-endian; register contents (cmp data, set keys) are raw bytes
//! in the packet's or the kernel's own order, exactly as loaded.

use super::{be32, be64};
use conndoc_netlink::{attrs, Attr};

/// `NFPROTO_*`: the family of an nftables table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NfFamily(pub u8);

impl NfFamily {
    pub const INET: NfFamily = NfFamily(1);
    pub const IP: NfFamily = NfFamily(2);
    pub const ARP: NfFamily = NfFamily(3);
    pub const NETDEV: NfFamily = NfFamily(5);
    pub const BRIDGE: NfFamily = NfFamily(7);
    pub const IP6: NfFamily = NfFamily(10);

    /// The family as nft names it.
    pub fn name(self) -> String {
        match self.0 {
            1 => "inet".into(),
            2 => "ip".into(),
            3 => "arp".into(),
            5 => "netdev".into(),
            7 => "bridge".into(),
            10 => "ip6".into(),
            n => format!("family{n}"),
        }
    }
}

/// `struct nfgenmsg` (family, version, resource id) then attributes.
fn nfgen(p: &[u8]) -> Option<(NfFamily, &[u8])> {
    Some((NfFamily(*p.first()?), p.get(4..)?))
}

fn string(a: &Attr<'_>) -> String {
    a.string()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMsg {
    pub family: NfFamily,
    pub name: String,
    /// NFT_TABLE_F_DORMANT = 1: the table's chains see no packets.
    pub flags: u32,
}

impl TableMsg {
    pub fn parse(p: &[u8]) -> Option<TableMsg> {
        let (family, body) = nfgen(p)?;
        let (mut name, mut flags) = (None, 0);
        for a in attrs(body) {
            match a.ty {
                1 => name = Some(string(&a)),
                2 => flags = be32(&a).unwrap_or(0),
                _ => {}
            }
        }
        Some(TableMsg { family, name: name?, flags })
    }
    pub fn dormant(&self) -> bool {
        self.flags & 1 != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainMsg {
    pub family: NfFamily,
    pub table: String,
    pub name: String,
    pub handle: u64,
    /// (NF_INET_* hook number, priority) of a base chain.
    pub hook: Option<(u32, i32)>,
    /// NF_DROP = 0, NF_ACCEPT = 1.
    pub policy: Option<u32>,
    /// `filter`, `nat`, `route`.
    pub kind: Option<String>,
    /// NFTA_CHAIN_COUNTERS of a base chain: (packets, bytes), as `iptables-save` prints them.
    pub counters: Option<(u64, u64)>,
}

impl ChainMsg {
    pub fn parse(p: &[u8]) -> Option<ChainMsg> {
        let (family, body) = nfgen(p)?;
        let mut c = ChainMsg {
            family,
            table: String::new(),
            name: String::new(),
            handle: 0,
            hook: None,
            policy: None,
            kind: None,
            counters: None,
        };
        for a in attrs(body) {
            match a.ty {
                1 => c.table = string(&a),
                2 => c.handle = be64(&a).unwrap_or(0),
                3 => c.name = string(&a),
                4 => {
                    let (mut num, mut prio) = (None, 0i32);
                    for h in attrs(a.value) {
                        match h.ty {
                            1 => num = be32(&h),
                            2 => prio = be32(&h).map(|v| v as i32).unwrap_or(0),
                            _ => {}
                        }
                    }
                    c.hook = num.map(|n| (n, prio));
                }
                5 => c.policy = be32(&a),
                7 => c.kind = Some(string(&a)),
                // NFTA_COUNTER_BYTES 1, NFTA_COUNTER_PACKETS 2
                8 => {
                    let (mut packets, mut bytes) = (0, 0);
                    for x in attrs(a.value) {
                        match x.ty {
                            1 => bytes = be64(&x).unwrap_or(0),
                            2 => packets = be64(&x).unwrap_or(0),
                            _ => {}
                        }
                    }
                    c.counters = Some((packets, bytes));
                }
                _ => {}
            }
        }
        (!c.table.is_empty() && !c.name.is_empty()).then_some(c)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMsg {
    pub family: NfFamily,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    pub exprs: Vec<Expr>,
    /// `comment "…"` from NFTA_RULE_USERDATA.
    pub comment: Option<String>,
}

impl RuleMsg {
    pub fn parse(p: &[u8]) -> Option<RuleMsg> {
        let (family, body) = nfgen(p)?;
        let mut r =
            RuleMsg { family, table: String::new(), chain: String::new(), handle: 0, exprs: Vec::new(), comment: None };
        for a in attrs(body) {
            match a.ty {
                1 => r.table = string(&a),
                2 => r.chain = string(&a),
                3 => r.handle = be64(&a).unwrap_or(0),
                4 => {
                    for elem in attrs(a.value).filter(|e| e.ty == 1) {
                        let (mut name, mut data) = ("?", &[][..]);
                        for x in attrs(elem.value) {
                            match x.ty {
                                1 => {
                                    let end = x.value.iter().position(|&b| b == 0).unwrap_or(x.value.len());
                                    name = std::str::from_utf8(&x.value[..end]).unwrap_or("?");
                                }
                                2 => data = x.value,
                                _ => {}
                            }
                        }
                        r.exprs.push(Expr::parse(name, data));
                    }
                }
                7 => r.comment = udata_comment(a.value),
                _ => {}
            }
        }
        (!r.table.is_empty() && !r.chain.is_empty()).then_some(r)
    }
}

/// nftnl user data: type-length-value with one-byte type and length;
/// NFTNL_UDATA_RULE_COMMENT = 0 holds a NUL-terminated string.
pub fn udata_comment(b: &[u8]) -> Option<String> {
    let mut at = 0;
    while at + 2 <= b.len() {
        let (ty, len) = (b[at], b[at + 1] as usize);
        let v = b.get(at + 2..at + 2 + len)?;
        if ty == 0 {
            let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
            return Some(String::from_utf8_lossy(&v[..end]).into_owned());
        }
        at += 2 + len;
    }
    None
}

pub const NFT_SET_ANONYMOUS: u32 = 0x1;
pub const NFT_SET_INTERVAL: u32 = 0x4;
pub const NFT_SET_MAP: u32 = 0x8;
pub const NFT_SET_TIMEOUT: u32 = 0x10;
pub const NFT_SET_EVAL: u32 = 0x20;
pub const NFT_SET_CONCAT: u32 = 0x80;
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetMsg {
    pub family: NfFamily,
    pub table: String,
    pub name: String,
    pub flags: u32,
    pub key_len: u32,
    /// NFT_DATA_VERDICT (0xffffff00) for verdict maps.
    pub data_type: Option<u32>,
    pub elems: Vec<SetElem>,
}

impl SetMsg {
    pub fn parse(p: &[u8]) -> Option<SetMsg> {
        let (family, body) = nfgen(p)?;
        let mut s = SetMsg {
            family,
            table: String::new(),
            name: String::new(),
            flags: 0,
            key_len: 0,
            data_type: None,
            elems: Vec::new(),
        };
        for a in attrs(body) {
            match a.ty {
                1 => s.table = string(&a),
                2 => s.name = string(&a),
                3 => s.flags = be32(&a).unwrap_or(0),
                5 => s.key_len = be32(&a).unwrap_or(0),
                6 => s.data_type = be32(&a),
                _ => {}
            }
        }
        (!s.table.is_empty() && !s.name.is_empty()).then_some(s)
    }
    pub fn anonymous(&self) -> bool {
        self.flags & NFT_SET_ANONYMOUS != 0 || self.name.starts_with("__")
    }
    pub fn verdict_map(&self) -> bool {
        self.flags & NFT_SET_MAP != 0 && self.data_type == Some(0xffff_ff00)
    }
    /// Elements can come and go without a ruleset commit (packet-path `add @set`, element
    /// timeouts), so the generation id does not tell when this set changed.
    pub fn changes_without_commit(&self) -> bool {
        self.flags & (NFT_SET_TIMEOUT | NFT_SET_EVAL) != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElem {
    pub key: Vec<u8>,
    /// NFTA_SET_ELEM_KEY_END: the inclusive end of a range (concatenated interval sets).
    pub key_end: Option<Vec<u8>>,
    pub flags: u32,
    pub data: Option<Data>,
    /// `comment "…"` from NFTA_SET_ELEM_USERDATA (kube-proxy names the Service there).
    pub comment: Option<String>,
}

/// One NEWSETELEM message: some elements of one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElemsMsg {
    pub family: NfFamily,
    pub table: String,
    pub set: String,
    pub elems: Vec<SetElem>,
}

impl SetElemsMsg {
    pub fn parse(p: &[u8]) -> Option<SetElemsMsg> {
        let (family, body) = nfgen(p)?;
        let mut m = SetElemsMsg { family, table: String::new(), set: String::new(), elems: Vec::new() };
        for a in attrs(body) {
            match a.ty {
                1 => m.table = string(&a),
                2 => m.set = string(&a),
                3 => {
                    for e in attrs(a.value).filter(|e| e.ty == 1) {
                        let mut el = SetElem { key: Vec::new(), key_end: None, flags: 0, data: None, comment: None };
                        for x in attrs(e.value) {
                            match x.ty {
                                1 => el.key = data_value(x.value).unwrap_or_default(),
                                2 => el.data = Data::parse(x.value),
                                3 => el.flags = be32(&x).unwrap_or(0),
                                6 => el.comment = udata_comment(x.value),
                                10 => el.key_end = data_value(x.value),
                                _ => {}
                            }
                        }
                        m.elems.push(el);
                    }
                }
                _ => {}
            }
        }
        Some(m)
    }
}

/// `NFTA_DATA_VALUE` inside a nested data attribute.
fn data_value(nested: &[u8]) -> Option<Vec<u8>> {
    attrs(nested).find(|a| a.ty == 1).map(|a| a.value.to_vec())
}

/// A verdict (`NFTA_VERDICT_CODE`: NF_DROP 0, NF_ACCEPT 1, NF_STOLEN 2, NF_QUEUE 3,
/// NFT_CONTINUE -1, NFT_BREAK -2, NFT_JUMP -3, NFT_GOTO -4, NFT_RETURN -5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Break,
    Return,
    Jump(String),
    Goto(String),
    Queue,
    Stolen,
    Other(i32),
}

impl Verdict {
    pub fn from_code(code: i32, chain: Option<String>) -> Verdict {
        match code {
            0 => Verdict::Drop,
            1 => Verdict::Accept,
            2 => Verdict::Stolen,
            3 => Verdict::Queue,
            -1 => Verdict::Continue,
            -2 => Verdict::Break,
            -3 => Verdict::Jump(chain.unwrap_or_default()),
            -4 => Verdict::Goto(chain.unwrap_or_default()),
            -5 => Verdict::Return,
            n if n & 0xffff == 3 => Verdict::Queue, // NF_QUEUE_NR(n)
            n => Verdict::Other(n),
        }
    }

    /// Parse a nested `NFTA_DATA_VERDICT`.
    pub fn parse(nested: &[u8]) -> Option<Verdict> {
        let (mut code, mut chain) = (None, None);
        for a in attrs(nested) {
            match a.ty {
                1 => code = be32(&a).map(|c| c as i32),
                2 => chain = Some(a.string()),
                _ => {}
            }
        }
        Some(Verdict::from_code(code?, chain))
    }

    /// As nft prints it.
    pub fn text(&self) -> String {
        match self {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Continue => "continue".into(),
            Verdict::Break => "break".into(),
            Verdict::Return => "return".into(),
            Verdict::Jump(c) => format!("jump {c}"),
            Verdict::Goto(c) => format!("goto {c}"),
            Verdict::Queue => "queue".into(),
            Verdict::Stolen => "stolen".into(),
            Verdict::Other(n) => format!("verdict {n}"),
        }
    }
}

/// `NFTA_DATA_*`: a value or a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Value(Vec<u8>),
    Verdict(Verdict),
}

impl Data {
    pub fn parse(nested: &[u8]) -> Option<Data> {
        for a in attrs(nested) {
            match a.ty {
                1 => return Some(Data::Value(a.value.to_vec())),
                2 => return Verdict::parse(a.value).map(Data::Verdict),
                _ => {}
            }
        }
        None
    }
}

/// `enum nft_registers`: NFT_REG_VERDICT (0), four 16-byte registers NFT_REG_1..4 (1–4)
/// and sixteen 4-byte ones NFT_REG32_00..15 (8–23) laid over the same storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    Verdict,
    /// NFT_REG_1..4 as 1–4.
    Reg128(u8),
    /// NFT_REG32_00..15 as 0–15.
    Reg32(u8),
}

impl Register {
    pub fn from_u32(v: u32) -> Option<Register> {
        Some(match v {
            0 => Register::Verdict,
            1..=4 => Register::Reg128(v as u8),
            8..=23 => Register::Reg32((v - 8) as u8),
            _ => return None,
        })
    }

    /// Where the register starts in the 4-byte words of the data registers (None for
    /// the verdict register): NFT_REG_2 and NFT_REG32_04 are the same place.
    pub fn word(self) -> Option<u32> {
        match self {
            Register::Verdict => None,
            Register::Reg128(n) => Some((u32::from(n) - 1) * 4),
            Register::Reg32(n) => Some(u32::from(n)),
        }
    }
}

/// `enum nft_cmp_ops`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    pub fn from_u32(v: u32) -> Option<CmpOp> {
        Some(match v {
            0 => CmpOp::Eq,
            1 => CmpOp::Neq,
            2 => CmpOp::Lt,
            3 => CmpOp::Lte,
            4 => CmpOp::Gt,
            5 => CmpOp::Gte,
            _ => return None,
        })
    }
}

/// `enum nft_payload_bases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Link,
    Network,
    Transport,
    Other(u32),
}

impl PayloadBase {
    fn from_u32(v: u32) -> PayloadBase {
        match v {
            0 => PayloadBase::Link,
            1 => PayloadBase::Network,
            2 => PayloadBase::Transport,
            n => PayloadBase::Other(n),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            PayloadBase::Link => "link",
            PayloadBase::Network => "network",
            PayloadBase::Transport => "transport",
            PayloadBase::Other(_) => "inner",
        }
    }
}

pub const NFT_META_MARK: u32 = 3;
pub const NFT_META_IIF: u32 = 4;
pub const NFT_META_OIF: u32 = 5;
pub const NFT_META_IIFNAME: u32 = 6;
pub const NFT_META_OIFNAME: u32 = 7;
pub const NFT_META_PROTOCOL: u32 = 1;
pub const NFT_META_NFPROTO: u32 = 15;
pub const NFT_META_L4PROTO: u32 = 16;

/// The name nft gives a `meta` key.
pub fn meta_name(key: u32) -> String {
    let n = match key {
        0 => "length",
        1 => "protocol",
        2 => "priority",
        3 => "mark",
        4 => "iif",
        5 => "oif",
        6 => "iifname",
        7 => "oifname",
        8 => "iiftype",
        9 => "oiftype",
        10 => "skuid",
        11 => "skgid",
        12 => "nftrace",
        13 => "rtclassid",
        14 => "secmark",
        15 => "nfproto",
        16 => "l4proto",
        17 => "ibrname",
        18 => "obrname",
        19 => "pkttype",
        20 => "cpu",
        21 => "iifgroup",
        22 => "oifgroup",
        23 => "cgroup",
        24 => "random",
        25 => "secpath",
        26 => "iifkind",
        27 => "oifkind",
        28 => "ibrpvid",
        29 => "ibrvproto",
        30 => "time",
        31 => "day",
        32 => "hour",
        33 => "sdif",
        34 => "sdifname",
        _ => return format!("key {key}"),
    };
    n.into()
}

pub const NFT_CT_STATE: u32 = 0;

/// The name nft gives a `ct` key.
pub fn ct_name(key: u32) -> String {
    let n = match key {
        0 => "state",
        1 => "direction",
        2 => "status",
        3 => "mark",
        4 => "secmark",
        5 => "expiration",
        6 => "helper",
        7 => "l3protocol",
        8 => "saddr",
        9 => "daddr",
        10 => "protocol",
        11 => "proto-src",
        12 => "proto-dst",
        13 => "label",
        14 => "packets",
        15 => "bytes",
        16 => "avgpkt",
        17 => "zone",
        18 => "event",
        _ => return format!("key {key}"),
    };
    n.into()
}

/// One rule expression. Registers are kept as the kernel numbers them (NFT_REG_VERDICT 0,
/// NFT_REG_1..4 = 1..4 of 16 bytes, NFT_REG32_00..15 = 8..23 of 4 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload {
        dreg: u32,
        base: PayloadBase,
        offset: u32,
        len: u32,
    },
    /// A payload write (`tcp dport set …`): no verdict.
    PayloadSet {
        base: PayloadBase,
        offset: u32,
        len: u32,
    },
    Meta {
        key: u32,
        dreg: Option<u32>,
        sreg: Option<u32>,
    },
    Cmp {
        sreg: u32,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` (op 0), or a shift (op 1, 2).
    Bitwise {
        sreg: u32,
        dreg: u32,
        op: u32,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// NFT_RANGE_EQ / NFT_RANGE_NEQ over [from, to].
    Range {
        sreg: u32,
        neq: bool,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// A set or map lookup; `dreg` Some(0) is a verdict map.
    Lookup {
        set: String,
        sreg: u32,
        dreg: Option<u32>,
        inv: bool,
    },
    Ct {
        key: u32,
        dreg: Option<u32>,
        sreg: Option<u32>,
    },
    Immediate {
        dreg: u32,
        data: Data,
    },
    /// NFT_REJECT_ICMP_UNREACH 0, NFT_REJECT_TCP_RST 1, NFT_REJECT_ICMPX_UNREACH 2.
    Reject {
        ty: u32,
        code: u8,
    },
    Counter {
        packets: u64,
        bytes: u64,
    },
    Log {
        prefix: Option<String>,
        group: Option<u16>,
        level: Option<u32>,
    },
    Limit {
        rate: u64,
        unit: u64,
        burst: u32,
        bytes: bool,
        inv: bool,
    },
    Quota {
        bytes: u64,
        inv: bool,
    },
    Numgen {
        dreg: u32,
        modulus: u32,
        random: bool,
        offset: u32,
    },
    /// `jhash EXPR mod N [seed S] [offset O]` (NFT_HASH_JENKINS, over `len` bytes of
    /// `sreg`) or `symhash mod N [offset O]` (NFT_HASH_SYM, the flow's addresses and ports).
    Hash {
        sreg: Option<u32>,
        dreg: u32,
        len: u32,
        modulus: u32,
        seed: u32,
        offset: u32,
        sym: bool,
    },
    Notrack,
    /// `nat` (NFT_NAT_SNAT 0 / NFT_NAT_DNAT 1): address and port bounds in registers.
    Nat {
        dnat: bool,
        /// NFPROTO_IPV4 2 / NFPROTO_IPV6 10 (`dnat ip to` in an inet table).
        family: u32,
        addr_min: Option<u32>,
        addr_max: Option<u32>,
        proto_min: Option<u32>,
        proto_max: Option<u32>,
        /// NF_NAT_RANGE_* flags.
        flags: u32,
    },
    /// `redir` (`redirect to :PORT`): this host, port bounds in registers.
    Redir {
        proto_min: Option<u32>,
        proto_max: Option<u32>,
        flags: u32,
    },
    /// `fib` lookup: NFTA_FIB_RESULT (NFT_FIB_RESULT_ADDRTYPE 3 = route type) of the
    /// addresses NFTA_FIB_FLAGS names (NFTA_FIB_F_DADDR 2, …).
    Fib {
        dreg: u32,
        result: u32,
        flags: u32,
    },
    /// `masq` (`masquerade`).
    Masq {
        flags: u32,
    },
    /// iptables-nft's compat expressions: the extension's name, revision and its kernel
    /// struct as iptables filled it (NFTA_MATCH_INFO / NFTA_TARGET_INFO), read by [`super::xt`].
    Xt {
        target: bool,
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// A load conndoc does not model (`fib`, `rt`, `exthdr`, `socket`, `osf`, `hash`,
    /// `xfrm`): a test of its register cannot be evaluated.
    Load {
        name: String,
        dreg: u32,
    },
    /// A statement without a verdict and without a test (`exthdr` write, `dup`, a named
    /// counter): evaluation goes on.
    Statement {
        name: String,
    },
    /// Anything else, by name.
    Other {
        name: String,
    },
}

impl Expr {
    /// Parse `NFTA_EXPR_DATA` of the expression called `name`; missing attributes make it
    /// [`Expr::Other`] so the rule is named, not lost.
    pub fn parse(name: &str, data: &[u8]) -> Expr {
        Self::try_parse(name, data).unwrap_or_else(|| Expr::Other { name: name.into() })
    }

    fn try_parse(name: &str, data: &[u8]) -> Option<Expr> {
        // Expression attributes are numbered from 1 and few.
        let mut a: [Option<Attr<'_>>; 16] = [None; 16];
        for x in attrs(data) {
            if let Some(slot) = a.get_mut(usize::from(x.ty)) {
                *slot = Some(x);
            }
        }
        let get = |t: u16| a.get(usize::from(t)).and_then(Option::as_ref);
        let u = |t: u16| get(t).and_then(be32);
        Some(match name {
            "payload" => {
                let base = PayloadBase::from_u32(u(2)?);
                let (offset, len) = (u(3)?, u(4)?);
                match u(1) {
                    Some(dreg) => Expr::Payload { dreg, base, offset, len },
                    None => Expr::PayloadSet { base, offset, len },
                }
            }
            "meta" => Expr::Meta { key: u(2)?, dreg: u(1), sreg: u(3) },
            "cmp" => Expr::Cmp { sreg: u(1)?, op: CmpOp::from_u32(u(2)?)?, data: data_value(get(3)?.value)? },
            "bitwise" => Expr::Bitwise {
                sreg: u(1)?,
                dreg: u(2)?,
                op: u(6).unwrap_or(0),
                mask: get(4).and_then(|m| data_value(m.value)).unwrap_or_default(),
                xor: get(5).and_then(|m| data_value(m.value)).unwrap_or_default(),
            },
            "range" => Expr::Range {
                sreg: u(1)?,
                neq: u(2)? == 1,
                from: data_value(get(3)?.value)?,
                to: data_value(get(4)?.value)?,
            },
            "lookup" => {
                Expr::Lookup { set: get(1)?.string(), sreg: u(2)?, dreg: u(3), inv: u(5).unwrap_or(0) & 1 != 0 }
            }
            "ct" => Expr::Ct { key: u(2)?, dreg: u(1), sreg: u(4) },
            "immediate" => Expr::Immediate { dreg: u(1)?, data: Data::parse(get(2)?.value)? },
            "reject" => Expr::Reject { ty: u(1)?, code: get(2).and_then(Attr::u8).unwrap_or(0) },
            "counter" => {
                Expr::Counter { bytes: get(1).and_then(be64).unwrap_or(0), packets: get(2).and_then(be64).unwrap_or(0) }
            }
            "log" => Expr::Log {
                group: get(1).and_then(|g| Some(u16::from_be_bytes(g.value.get(..2)?.try_into().ok()?))),
                prefix: get(2).map(Attr::string),
                level: u(5),
            },
            "limit" => Expr::Limit {
                rate: get(1).and_then(be64)?,
                unit: get(2).and_then(be64)?,
                burst: u(3).unwrap_or(0),
                bytes: u(4) == Some(1),
                inv: u(5).unwrap_or(0) & 1 != 0,
            },
            "quota" => Expr::Quota { bytes: get(1).and_then(be64)?, inv: u(2).unwrap_or(0) & 1 != 0 },
            "numgen" => {
                Expr::Numgen { dreg: u(1)?, modulus: u(2)?, random: u(3) == Some(1), offset: u(4).unwrap_or(0) }
            }
            "notrack" => Expr::Notrack,
            "nat" => Expr::Nat {
                dnat: u(1)? == 1,
                family: u(2)?,
                addr_min: u(3),
                addr_max: u(4),
                proto_min: u(5),
                proto_max: u(6),
                flags: u(7).unwrap_or(0),
            },
            "redir" => Expr::Redir { proto_min: u(1), proto_max: u(2), flags: u(3).unwrap_or(0) },
            "masq" => Expr::Masq { flags: u(1).unwrap_or(0) },
            "fib" if u(1).is_some() => Expr::Fib { dreg: u(1)?, result: u(2)?, flags: u(3).unwrap_or(0) },
            "fib" | "rt" | "exthdr" | "osf" | "xfrm" => match u(1) {
                Some(dreg) => Expr::Load { name: name.into(), dreg },
                None if name == "exthdr" => Expr::Statement { name: "exthdr write".into() },
                None => return None,
            },
            // byteorder turns a register around (sreg 1 → dreg 2): what it holds is unknown
            // NFTA_HASH_SREG 1, DREG 2, LEN 3, MODULUS 4, SEED 5, OFFSET 6, TYPE 7 (SYM 1)
            "hash" if u(4).is_some() => Expr::Hash {
                sreg: u(1),
                dreg: u(2)?,
                len: u(3).unwrap_or(0),
                modulus: u(4)?,
                seed: u(5).unwrap_or(0),
                offset: u(6).unwrap_or(0),
                sym: u(7) == Some(1),
            },
            "socket" | "hash" | "byteorder" => Expr::Load { name: name.into(), dreg: u(2)? },
            "dup" => Expr::Statement { name: name.into() },
            // NFT_OBJECT_COUNTER 1, CT_HELPER 3, CT_TIMEOUT 7, SECMARK 8, CT_EXPECT 9: no
            // test; a named quota, limit or connlimit is one.
            "objref" if matches!(u(1), Some(1 | 3 | 7 | 8 | 9)) => Expr::Statement { name: name.into() },
            // NFTA_MATCH_NAME 1, _REV 2, _INFO 3 (the same numbers for targets)
            "match" | "target" => Expr::Xt {
                target: name == "target",
                name: get(1)?.string(),
                rev: u(2).unwrap_or(0),
                info: get(3).map(|i| i.value.to_vec()).unwrap_or_default(),
            },
            _ => return None,
        })
    }

    pub(crate) fn needs_ifindex(&self) -> bool {
        matches!(self, Expr::Meta { key: NFT_META_IIF | NFT_META_OIF, dreg: Some(_), .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut out = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(v);
        out.resize((out.len() + 3) & !3, 0);
        out
    }

    #[test]
    fn verdict_codes() {
        // NFTA_VERDICT_CODE = NFT_JUMP (-3, big-endian), NFTA_VERDICT_CHAIN = "services"
        let mut b = nla(1, &(-3i32).to_be_bytes());
        b.extend(nla(2, b"services\0"));
        assert_eq!(Verdict::parse(&b), Some(Verdict::Jump("services".into())));
        assert_eq!(Verdict::parse(&nla(1, &[0, 0, 0, 1])), Some(Verdict::Accept));
        assert_eq!(Verdict::parse(&nla(1, &[0, 0, 0, 0])), Some(Verdict::Drop));
        assert_eq!(Verdict::parse(&nla(1, &[0xff, 0xff, 0xff, 0xfb])), Some(Verdict::Return));
        assert_eq!(Verdict::parse(&nla(1, &[0xff, 0xff, 0xff, 0xff])), Some(Verdict::Continue));
        assert_eq!(Verdict::parse(&nla(1, &[0, 2, 0, 3])), Some(Verdict::Queue));
        assert_eq!(Verdict::parse(&[]), None);
    }

    #[test]
    fn cmp_and_reject() {
        // [ cmp eq reg 1 0x0000581b ]: sreg 1, op 0, data 1b 58 (port 7000)
        let mut b = nla(1, &1u32.to_be_bytes());
        b.extend(nla(2, &0u32.to_be_bytes()));
        b.extend(nla(3, &nla(1, &[0x1b, 0x58])));
        assert_eq!(Expr::parse("cmp", &b), Expr::Cmp { sreg: 1, op: CmpOp::Eq, data: vec![0x1b, 0x58] });
        // an unknown operator keeps the expression, by name
        let mut bad = nla(1, &1u32.to_be_bytes());
        bad.extend(nla(2, &9u32.to_be_bytes()));
        bad.extend(nla(3, &nla(1, &[0])));
        assert_eq!(Expr::parse("cmp", &bad), Expr::Other { name: "cmp".into() });
        // [ reject type 0 code 13 ]
        let mut r = nla(1, &0u32.to_be_bytes());
        r.extend(nla(2, &[13]));
        assert_eq!(Expr::parse("reject", &r), Expr::Reject { ty: 0, code: 13 });
    }

    #[test]
    fn registers() {
        // NFTA_CMP_SREG of `[ cmp eq reg 1 … ]` as recorded: 00 00 00 01 (big-endian)
        let r = Register::from_u32(u32::from_be_bytes([0, 0, 0, 1])).unwrap();
        assert_eq!((r, r.word()), (Register::Reg128(1), Some(0)));
        assert_eq!(Register::from_u32(2).unwrap().word(), Register::from_u32(12).unwrap().word());
        assert_eq!(Register::from_u32(23), Some(Register::Reg32(15)));
        assert_eq!(Register::from_u32(0).unwrap().word(), None);
        assert_eq!(Register::from_u32(5), None);
        assert_eq!(Register::from_u32(24), None);
    }

    #[test]
    fn comment_userdata() {
        // recorded: userdata = { \x00\x0chello world\x00 }
        let b = b"\x00\x0chello world\x00";
        assert_eq!(udata_comment(b).as_deref(), Some("hello world"));
        assert_eq!(udata_comment(b"\x01\x02ab"), None);
        assert_eq!(udata_comment(b"\x00\x09ab"), None, "length past the end");
    }
}
