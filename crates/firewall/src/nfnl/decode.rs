//! From decoded nf_tables messages to the evaluation model, and each rule back into the
//! nft syntax people know (`ip saddr 10.77.0.0/24 tcp dport 7000 reject with tcp reset`).
//!
//! Rule expressions form a small register machine: loads (payload, meta, ct) fill a
//! register, `bitwise` masks it, and `cmp`/`range`/`lookup` test it. Walking a rule keeps
//! what each register holds, so a test can be read as "ip saddr in 10.77.0.0/24". The
//! implicit dependencies nft adds (`meta nfproto ipv4` before `ip saddr` in an inet
//! table, `meta l4proto tcp` before `tcp dport`) are evaluated like any condition and left
//! out of the text, as nft does.
//!
//! The files: [`build`] (messages to the model), [`rule`] (the register machine), [`field`]
//! (what a register holds), [`value`] (bytes as values), [`cmp`], [`lookup`], [`concat`], [`nat`],
//! [`reject`] (one kind of expression each).

mod build;
mod cmp;
mod concat;
mod field;
mod lookup;
mod nat;
mod reject;
mod rule;
mod value;

pub use build::{retain_tables, to_ruleset, without_tables, Builder, Provenance, SetIndex};
pub use field::proto_name;
pub use rule::{decode_rule, Decoded};
