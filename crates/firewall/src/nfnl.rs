//! nftables read straight from the kernel over NETLINK_NETFILTER (nfnetlink, subsystem
//! NFNL_SUBSYS_NFTABLES): tables, chains, rules, sets and set elements are dumped in the
//! calling thread's network namespace, decoded into the same [`crate::model`] types the
//! `nft -j` path builds, and every rule is rendered back into nft syntax for people.
//!
//! Moving bytes ([`dump`]) is apart from reading them ([`Dump::parse`], [`to_ruleset`]):
//! the latter are pure and tested against dumps recorded from the kernel.
//! No `nft` process runs, which is what makes a 10,000-rule ruleset cheap to read.

pub mod decode;
pub mod expr;
pub mod iptnft;
pub mod xt;

pub use decode::{to_ruleset, without_tables, Builder};
pub use expr::{CmpOp, Data, Expr, NfFamily, Verdict};

use crate::cache::{CacheConfig, CacheLevel};
use conndoc_netlink::{attrs, Attr, NetlinkError, Replies, NLM_F_ACK, NLM_F_DUMP};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;

/// `enum nf_tables_msg_types` (the ones conndoc reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum MsgType {
    NewTable = 0,
    GetTable = 1,
    NewChain = 3,
    GetChain = 4,
    NewRule = 6,
    GetRule = 7,
    NewSet = 9,
    GetSet = 10,
    NewSetElem = 12,
    GetSetElem = 13,
    NewGen = 15,
    GetGen = 16,
}

impl MsgType {
    fn nlmsg_type(self) -> u16 {
        (NFNL_SUBSYS_NFTABLES << 8) | self as u16
    }
    /// The message type of a reply (`NFT_MSG_NEW*`), None for another subsystem or kind.
    pub fn from_nlmsg_type(ty: u16) -> Option<MsgType> {
        if ty >> 8 != NFNL_SUBSYS_NFTABLES {
            return None;
        }
        Some(match ty & 0xff {
            0 => MsgType::NewTable,
            3 => MsgType::NewChain,
            6 => MsgType::NewRule,
            9 => MsgType::NewSet,
            12 => MsgType::NewSetElem,
            15 => MsgType::NewGen,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NfnlError {
    #[error("open NETLINK_NETFILTER socket: {0}")]
    Open(std::io::Error),
    #[error("send nf_tables {what} request: {source}")]
    Send { what: &'static str, source: std::io::Error },
    #[error("receive nf_tables {what} reply: {source}")]
    Recv { what: &'static str, source: std::io::Error },
    #[error("nf_tables {what} dump did not finish within {ms} ms")]
    Timeout { what: &'static str, ms: u128 },
    #[error("nf_tables {what} request refused by the kernel: {errno}")]
    Kernel { what: &'static str, errno: std::io::Error },
    #[error("malformed nf_tables {what} message: {detail}")]
    Parse { what: &'static str, detail: String },
    #[error("the nf_tables ruleset changed during each of {tries} reads")]
    Changing { tries: u32 },
}

impl NfnlError {
    /// The kernel said no for lack of privilege (CAP_NET_ADMIN in the namespace's owner).
    pub fn is_permission(&self) -> bool {
        matches!(self, NfnlError::Kernel { errno, .. } if errno.raw_os_error() == Some(libc::EPERM))
    }
}

/// Every reply message of one consistent read, as the kernel sent it (payload after the
/// netlink header, starting with `struct nfgenmsg`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawDump {
    /// `NFTA_GEN_ID` the read is consistent with.
    pub generation: u32,
    pub messages: Vec<(MsgType, Vec<u8>)>,
}

impl RawDump {
    /// A simple self-describing file form for recorded fixtures:
    /// `u32 generation`, then per message `u16 type, u32 length, bytes` (little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.generation.to_le_bytes().to_vec();
        for (ty, p) in &self.messages {
            out.extend_from_slice(&(*ty as u16).to_le_bytes());
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<RawDump> {
        let generation = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
        let mut at = 4;
        let mut messages = Vec::new();
        while at < b.len() {
            let ty = u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?);
            let len = u32::from_le_bytes(b.get(at + 2..at + 6)?.try_into().ok()?) as usize;
            let p = b.get(at + 6..at + 6 + len)?.to_vec();
            messages.push((MsgType::from_nlmsg_type(SUBSYS_BITS | ty)?, p));
            at += 6 + len;
        }
        Some(RawDump { generation, messages })
    }
}

const SUBSYS_BITS: u16 = NFNL_SUBSYS_NFTABLES << 8;

/// `struct nfgenmsg` + attributes of one request.
fn request(family: u8, attrs_out: &[(u16, &[u8])]) -> Vec<u8> {
    let mut p = vec![family, NFNETLINK_V0, 0, 0];
    for (ty, v) in attrs_out {
        let len = 4 + v.len();
        p.extend_from_slice(&(len as u16).to_ne_bytes());
        p.extend_from_slice(&ty.to_ne_bytes());
        p.extend_from_slice(v);
        p.resize((p.len() + 3) & !3, 0);
    }
    p
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A NETLINK_NETFILTER socket in the calling thread's network namespace, with the
/// deadline of the whole read.
struct NfSocket {
    sock: conndoc_netlink::Socket,
    deadline: Instant,
}

impl From<NetlinkError> for NfnlError {
    fn from(e: NetlinkError) -> NfnlError {
        match e {
            NetlinkError::Open { source, .. } => NfnlError::Open(source),
            NetlinkError::Send { what, source } => NfnlError::Send { what, source },
            NetlinkError::Recv { what, source } => NfnlError::Recv { what, source },
            NetlinkError::Timeout { what, after } => NfnlError::Timeout { what, ms: after.as_millis() },
            NetlinkError::Kernel { what, errno } => NfnlError::Kernel { what, errno },
            NetlinkError::Parse { what, detail } => NfnlError::Parse { what, detail },
            NetlinkError::Lost { what } => NfnlError::Parse { what, detail: "replies lost".into() },
        }
    }
}

impl NfSocket {
    fn open(deadline: Instant) -> Result<NfSocket, NfnlError> {
        Ok(NfSocket { sock: conndoc_netlink::Socket::open(conndoc_netlink::Family::Netfilter)?, deadline })
    }

    /// Send one request and hand each reply message of it to `each`, until NLMSG_DONE
    /// (dumps) or the ACK (single requests), an error, or the deadline.
    fn exchange(
        &mut self,
        what: &'static str,
        ty: MsgType,
        flags: u16,
        payload: &[u8],
        mut each: impl FnMut(u16, &[u8]) -> Result<(), NfnlError>,
    ) -> Result<Replies, NfnlError> {
        self.sock.request(what, ty.nlmsg_type(), flags, payload, self.deadline, |m| each(m.ty, m.payload))
    }

    /// The ruleset's generation id (NFT_MSG_GETGEN; it changes with every commit) and the
    /// NEWGEN message it came in.
    fn generation(&mut self) -> Result<Option<(u32, Vec<u8>)>, NfnlError> {
        let mut gen = None;
        let r = self.exchange("GETGEN", MsgType::GetGen, NLM_F_ACK, &request(0, &[]), |ty, p| {
            if MsgType::from_nlmsg_type(ty) == Some(MsgType::NewGen) {
                gen = parse_gen(p).map(|g| (g, p.to_vec()));
            }
            Ok(())
        })?;
        Ok(match r {
            Replies::Done { .. } => gen,
            Replies::Lost => None,
        })
    }
}

/// NFTA_GEN_ID of a NEWGEN message.
pub fn parse_gen(p: &[u8]) -> Option<u32> {
    attrs(p.get(4..)?).find(|a| a.ty == 1).and_then(|a| be32(&a))
}

pub(crate) fn be32(a: &Attr<'_>) -> Option<u32> {
    Some(u32::from_be_bytes(a.value.get(..4)?.try_into().ok()?))
}
pub(crate) fn be64(a: &Attr<'_>) -> Option<u64> {
    Some(u64::from_be_bytes(a.value.get(..8)?.try_into().ok()?))
}

/// How many times a read is started over when the ruleset changes under it.
pub const MAX_TRIES: u32 = 4;

/// What [`dump_with`] hands on.
pub enum Event<'a> {
    /// One reply message (payload after the netlink header).
    Msg(MsgType, &'a [u8]),
    /// The ruleset changed during the read: forget everything so far, it starts over.
    Restart,
}

/// Dump the whole nf_tables ruleset of the calling thread's network namespace, handing each
/// message to `sink` as it arrives: the generation, tables, chains, sets, the elements of
/// every set (anonymous ones and maps included), then rules — so a consumer knows every
/// set before the first rule that looks one up. The read is started over when the
/// generation id moved during it, so what `sink` saw last is one committed state.
/// Returns that generation.
pub fn dump_with(deadline: Instant, sink: &mut dyn FnMut(Event<'_>)) -> Result<u32, NfnlError> {
    dump_on(NfSocket::open(deadline)?, None, sink)
}

/// [`dump_with`] on an open socket; `first` is a generation (and its NEWGEN message) just
/// read on it, which the first attempt starts from instead of asking again.
fn dump_on(
    mut s: NfSocket,
    mut first: Option<(u32, Vec<u8>)>,
    sink: &mut dyn FnMut(Event<'_>),
) -> Result<u32, NfnlError> {
    for attempt in 0..MAX_TRIES {
        if attempt > 0 {
            sink(Event::Restart);
        }
        let now = match first.take() {
            Some(g) => Some(g),
            None => s.generation()?,
        };
        let Some((before, gen_msg)) = now else { continue };
        sink(Event::Msg(MsgType::NewGen, &gen_msg));
        let mut sets: Vec<(u8, String, String)> = Vec::new();
        let mut complete = true;
        for (what, ty) in
            [("GETTABLE", MsgType::GetTable), ("GETCHAIN", MsgType::GetChain), ("GETSET", MsgType::GetSet)]
        {
            let r = s.exchange(what, ty, NLM_F_DUMP, &request(0, &[]), |t, p| {
                if let Some(m) = MsgType::from_nlmsg_type(t) {
                    if m == MsgType::NewSet {
                        if let Some(set) = expr::SetMsg::parse(p) {
                            sets.push((set.family.0, set.table, set.name));
                        }
                    }
                    sink(Event::Msg(m, p));
                }
                Ok(())
            })?;
            if !matches!(r, Replies::Done { interrupted: false }) {
                complete = false;
                break;
            }
        }
        for (family, table, name) in if complete { sets.as_slice() } else { &[] } {
            let req = request(*family, &[(1, &cstr(table)), (2, &cstr(name))]);
            let r = s.exchange("GETSETELEM", MsgType::GetSetElem, NLM_F_DUMP, &req, |t, p| {
                if let Some(m) = MsgType::from_nlmsg_type(t) {
                    sink(Event::Msg(m, p));
                }
                Ok(())
            });
            match r {
                Ok(Replies::Done { interrupted: false }) => {}
                // The set went away since GETSET: the generation check below catches it.
                Err(NfnlError::Kernel { errno, .. }) if errno.raw_os_error() == Some(libc::ENOENT) => {}
                Ok(_) => {
                    complete = false;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if complete {
            let r = s.exchange("GETRULE", MsgType::GetRule, NLM_F_DUMP, &request(0, &[]), |t, p| {
                if let Some(m) = MsgType::from_nlmsg_type(t) {
                    sink(Event::Msg(m, p));
                }
                Ok(())
            })?;
            complete = matches!(r, Replies::Done { interrupted: false });
        }
        if complete && s.generation()?.map(|g| g.0) == Some(before) {
            return Ok(before);
        }
    }
    Err(NfnlError::Changing { tries: MAX_TRIES })
}

/// Whether the calling thread's namespace has an nf_tables base chain of type `nat` on the
/// IP path (families ip, ip6, inet; iptables-nft's `nat` table makes such chains too): one
/// GETCHAIN dump on one socket. What a refused port asks before the rules are read at all —
/// a whole [`read`] would take a GETGEN, a second socket and thread, and five dumps to
/// answer the same. A dormant table's chains count (reading the rules then says more).
pub fn nat_chains_present(timeout: Duration) -> Result<bool, NfnlError> {
    let mut s = NfSocket::open(Instant::now() + timeout)?;
    let mut nat = false;
    s.exchange("GETCHAIN", MsgType::GetChain, NLM_F_DUMP, &request(0, &[]), |t, p| {
        if !nat && MsgType::from_nlmsg_type(t) == Some(MsgType::NewChain) {
            nat = expr::ChainMsg::parse(p).is_some_and(|c| is_ip_nat_base(&c));
        }
        Ok(())
    })?;
    Ok(nat)
}

/// A base chain of type `nat` in a family packets of the IP path meet.
fn is_ip_nat_base(c: &expr::ChainMsg) -> bool {
    use expr::NfFamily;
    c.hook.is_some()
        && c.kind.as_deref() == Some("nat")
        && [NfFamily::IP, NfFamily::IP6, NfFamily::INET].contains(&c.family)
}

/// One netlink attribute (nested ones get NLA_F_NESTED), padded to 4 bytes.
fn nla(ty: u16, v: &[u8], nested: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + v.len() + 3);
    out.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&(if nested { ty | 0x8000 } else { ty }).to_ne_bytes());
    out.extend_from_slice(v);
    out.resize((out.len() + 3) & !3, 0);
    out
}

/// Targeted reads of one table (kube-proxy's), without dumping the ruleset: single set
/// elements by key, one chain's rules, one set's elements. Each is one round trip on one
/// socket in the calling thread's namespace, under one deadline.
pub struct TableReader {
    sock: NfSocket,
    family: u8,
    table: String,
}

impl TableReader {
    pub fn open(family: NfFamily, table: &str, deadline: Instant) -> Result<TableReader, NfnlError> {
        Ok(TableReader { sock: NfSocket::open(deadline)?, family: family.0, table: table.to_string() })
    }

    /// The element of `set` whose key is `key` (NFT_MSG_GETSETELEM without NLM_F_DUMP, as
    /// `nft get element` does); None when there is none (or no such set or table).
    pub fn element(&mut self, set: &str, key: &[u8]) -> Result<Option<expr::SetElem>, NfnlError> {
        let value = nla(1, key, false); // NFTA_DATA_VALUE
        let elem = nla(1, &nla(1, &value, true), true); // NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { … } }
        let elems = nla(3, &elem, true); // NFTA_SET_ELEM_LIST_ELEMENTS
        let mut req = request(self.family, &[(1, &cstr(&self.table)), (2, &cstr(set))]);
        req.extend_from_slice(&elems);
        let mut found = None;
        let r = self.sock.exchange("GETSETELEM", MsgType::GetSetElem, NLM_F_ACK, &req, |t, p| {
            if MsgType::from_nlmsg_type(t) == Some(MsgType::NewSetElem) {
                if let Some(m) = expr::SetElemsMsg::parse(p) {
                    found = found.take().or_else(|| m.elems.into_iter().next());
                }
            }
            Ok(())
        });
        match r {
            Ok(_) => Ok(found),
            Err(NfnlError::Kernel { errno, .. }) if errno.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every element of `set` (a dump of that set only), at most `max`.
    pub fn elements(&mut self, set: &str, max: usize) -> Result<Vec<expr::SetElem>, NfnlError> {
        let req = request(self.family, &[(1, &cstr(&self.table)), (2, &cstr(set))]);
        let mut out = Vec::new();
        let r = self.sock.exchange("GETSETELEM", MsgType::GetSetElem, NLM_F_DUMP, &req, |t, p| {
            if MsgType::from_nlmsg_type(t) == Some(MsgType::NewSetElem) {
                if let Some(m) = expr::SetElemsMsg::parse(p) {
                    out.extend(m.elems.into_iter().take(max.saturating_sub(out.len())));
                }
            }
            Ok(())
        });
        match r {
            Ok(_) => Ok(out),
            Err(NfnlError::Kernel { errno, .. }) if errno.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The rules of one chain (NFT_MSG_GETRULE dump filtered by table and chain), at most `max`.
    pub fn rules(&mut self, chain: &str, max: usize) -> Result<Vec<expr::RuleMsg>, NfnlError> {
        let req = request(self.family, &[(1, &cstr(&self.table)), (2, &cstr(chain))]);
        let mut out = Vec::new();
        let r = self.sock.exchange("GETRULE", MsgType::GetRule, NLM_F_DUMP, &req, |t, p| {
            if MsgType::from_nlmsg_type(t) == Some(MsgType::NewRule) && out.len() < max {
                if let Some(m) = expr::RuleMsg::parse(p) {
                    // Older kernels ignore the chain filter: keep only the chain asked for.
                    if m.chain == chain {
                        out.push(m);
                    }
                }
            }
            Ok(())
        });
        match r {
            Ok(_) => Ok(out),
            Err(NfnlError::Kernel { errno, .. }) if errno.raw_os_error() == Some(libc::ENOENT) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// Dump the whole ruleset as raw messages (see [`dump_with`]); for recording fixtures.
pub fn dump(deadline: Instant) -> Result<RawDump, NfnlError> {
    let mut messages = Vec::new();
    let generation = dump_with(deadline, &mut |ev| match ev {
        Event::Msg(t, p) => messages.push((t, p.to_vec())),
        Event::Restart => messages.clear(),
    })?;
    Ok(RawDump { generation, messages })
}

/// The nf_tables ruleset of one namespace, read over netlink.
#[derive(Debug, Clone)]
pub struct NetlinkRuleset {
    pub generation: u32,
    /// Every table (iptables-nft's too: see [`decode::without_tables`]), source index 0.
    pub ruleset: Arc<crate::model::Ruleset>,
    /// None: dumped now; else the cache level the decode of this generation came from.
    pub cached: Option<CacheLevel>,
    /// How each family's iptables-nft tables were read from the dump (none listed: the
    /// dump held none). Their rules are in `ruleset` as [`crate::ipt::parse_save`] makes
    /// them (family `ipv4`/`ipv6`), or, where Err, as nft rules.
    pub iptables_nft: Vec<iptnft::Read>,
}

/// The ruleset of the calling thread's namespace, from the cache when its generation is
/// unchanged since an earlier read, else dumped (see [`crate::cache`]; `CONNDOC_NO_CACHE=1`
/// turns the cache off).
pub fn read(timeout: Duration) -> Result<NetlinkRuleset, NfnlError> {
    read_with(timeout, &CacheConfig::from_env())
}

/// [`read`] with the cache levels given.
pub fn read_with(timeout: Duration, cfg: &CacheConfig) -> Result<NetlinkRuleset, NfnlError> {
    let deadline = Instant::now() + timeout;
    if !cfg.enabled() {
        return read_dump(None, deadline).map(|(r, _)| r);
    }
    // One GETGEN round trip on a socket of this namespace, which also names it. Failing
    // that (e.g. no permission), the dump below says why. On a miss the dump goes on over
    // the same socket from that generation: no second socket, no second GETGEN.
    let mut sock = NfSocket::open(deadline).ok();
    let now = sock.as_mut().and_then(|s| {
        let cookie = crate::cache::netns_cookie(std::os::fd::AsFd::as_fd(&s.sock))?;
        Some((cookie, s.generation().ok()??))
    });
    if let Some((cookie, (generation, _))) = &now {
        if let Some((ruleset, level)) = crate::cache::lookup(cfg, *cookie, *generation, interface_names) {
            // A decode with an iptables-nft fallback is never kept (see cache::store).
            let iptables_nft = iptnft::reads_in(&ruleset);
            return Ok(NetlinkRuleset { generation: *generation, ruleset, cached: Some(level), iptables_nft });
        }
    }
    let cookie = now.as_ref().map(|(c, _)| *c);
    let start = sock.zip(now.map(|(_, g)| g));
    let (r, provenance) = read_dump(start, deadline)?;
    if let Some(cookie) = cookie {
        crate::cache::store(cfg, cookie, r.generation, &r.ruleset, &provenance);
    }
    Ok(r)
}

/// Dump and decode the ruleset of the calling thread's namespace. Receiving and decoding
/// overlap: one thread (in the same namespace) takes messages from the kernel while this
/// one turns them into rules.
fn read_dump(
    start: Option<(NfSocket, (u32, Vec<u8>))>,
    deadline: Instant,
) -> Result<(NetlinkRuleset, decode::Provenance), NfnlError> {
    // Messages go over in batches of framed bytes (type, length, payload): one channel
    // send and one allocation per message would cost more than the overlap saves.
    type Batch = Option<Vec<u8>>;
    const BATCH: usize = 64 * 1024;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(64);
    std::thread::scope(|scope| {
        let receiver = scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH + 4096);
            let mut sink = |ev: Event<'_>| match ev {
                Event::Msg(t, p) => {
                    batch.extend_from_slice(&(t as u16).to_ne_bytes());
                    batch.extend_from_slice(&(p.len() as u32).to_ne_bytes());
                    batch.extend_from_slice(p);
                    if batch.len() >= BATCH {
                        let _ = tx.send(Some(std::mem::replace(&mut batch, Vec::with_capacity(BATCH + 4096))));
                    }
                }
                Event::Restart => {
                    batch.clear();
                    let _ = tx.send(None);
                }
            };
            let r = match start {
                Some((s, first)) => dump_on(s, Some(first), &mut sink),
                None => dump_with(deadline, &mut sink),
            };
            if !batch.is_empty() {
                let _ = tx.send(Some(batch));
            }
            r
        });
        let mut b = decode::Builder::new(0, None);
        let mut bad = None;
        for batch in rx {
            let Some(bytes) = batch else {
                b = decode::Builder::new(0, None);
                bad = None;
                continue;
            };
            let mut at = 0;
            while at + 6 <= bytes.len() {
                let ty = u16::from_ne_bytes([bytes[at], bytes[at + 1]]);
                let len = u32::from_ne_bytes([bytes[at + 2], bytes[at + 3], bytes[at + 4], bytes[at + 5]]) as usize;
                let p = &bytes[at + 6..(at + 6 + len).min(bytes.len())];
                at += 6 + len;
                let Some(t) = MsgType::from_nlmsg_type(SUBSYS_BITS | ty) else { continue };
                if let Err(what) = b.add(t, p) {
                    bad.get_or_insert(what);
                }
            }
        }
        let generation = receiver.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        if let Some(what) = bad {
            return Err(NfnlError::Parse { what, detail: "missing name or table".into() });
        }
        let provenance = b.provenance();
        let (rs, iptables_nft) = b.finish_all();
        Ok((NetlinkRuleset { generation, ruleset: Arc::new(rs), cached: None, iptables_nft }, provenance))
    })
}

/// Interface index → name in the calling thread's namespace (for `meta iif`/`oif`).
pub fn interface_names() -> Vec<(u32, String)> {
    conndoc_netlink::links().map(|l| l.into_iter().map(|l| (l.index, l.name)).collect()).unwrap_or_default()
}

/// A decoded dump: what [`to_ruleset`] reads.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    pub generation: u32,
    pub tables: Vec<expr::TableMsg>,
    pub chains: Vec<expr::ChainMsg>,
    pub rules: Vec<expr::RuleMsg>,
    pub sets: Vec<expr::SetMsg>,
    /// Interface index → name, for `meta iif`/`oif` (read beside the dump).
    pub ifnames: Vec<(u32, String)>,
}

impl Dump {
    /// Decode every message; one that cannot be read at all is an error (a rule with an
    /// expression conndoc does not know is not: it is kept and named later).
    pub fn parse(raw: &RawDump) -> Result<Dump, NfnlError> {
        let mut d = Dump { generation: raw.generation, ..Dump::default() };
        let bad = |what: &'static str| NfnlError::Parse { what, detail: "missing name or table".into() };
        let mut elems: Vec<expr::SetElemsMsg> = Vec::new();
        for (ty, p) in &raw.messages {
            match ty {
                MsgType::NewTable => d.tables.push(expr::TableMsg::parse(p).ok_or_else(|| bad("table"))?),
                MsgType::NewChain => d.chains.push(expr::ChainMsg::parse(p).ok_or_else(|| bad("chain"))?),
                MsgType::NewRule => d.rules.push(expr::RuleMsg::parse(p).ok_or_else(|| bad("rule"))?),
                MsgType::NewSet => d.sets.push(expr::SetMsg::parse(p).ok_or_else(|| bad("set"))?),
                MsgType::NewSetElem => elems.push(expr::SetElemsMsg::parse(p).ok_or_else(|| bad("set element"))?),
                _ => {}
            }
        }
        for e in elems {
            if let Some(set) = d.sets.iter_mut().find(|s| s.family == e.family && s.table == e.table && s.name == e.set)
            {
                set.elems.extend(e.elems);
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_encoding() {
        let p = request(1, &[(1, b"t\0"), (2, b"__set0\0")]);
        assert_eq!(&p[..4], &[1, 0, 0, 0]);
        let a: Vec<_> = attrs(&p[4..]).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].string(), "__set0");
        let m = conndoc_netlink::encode(
            MsgType::GetSetElem.nlmsg_type(),
            conndoc_netlink::NLM_F_REQUEST | NLM_F_DUMP,
            9,
            &p,
        );
        let parsed: Vec<_> = conndoc_netlink::messages(&m).map(Result::unwrap).collect();
        assert_eq!(parsed[0].ty, 0x0a0d);
        assert_eq!(parsed[0].flags, 0x301);
    }

    #[test]
    fn gen_message() {
        // The NEWGEN the kernel sent first in the recorded dump (nfgenmsg, NFTA_GEN_ID,
        // NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME).
        let raw = RawDump::from_bytes(include_bytes!("../tests/fixtures/nfnl-mixed.bin")).unwrap();
        let (ty, p) = &raw.messages[0];
        assert_eq!(*ty, MsgType::NewGen);
        assert_eq!(parse_gen(p), Some(raw.generation));
        assert_eq!(parse_gen(&p[..6]), None);
        assert!(Dump::parse(&raw).unwrap().rules.len() > 30);
    }

    #[test]
    fn raw_dump_file_form() {
        let r = RawDump { generation: 5, messages: vec![(MsgType::NewRule, vec![1, 2, 3]), (MsgType::NewSet, vec![])] };
        assert_eq!(RawDump::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(RawDump::from_bytes(&[1, 2]), None);
    }
}
