//! Protocol stage (issue 5): speak Redis / HTTP / TLS on the addresses that connected.
use crate::Options;
use conndoc_facts::Evidence;

pub(crate) fn run(_ev: &mut Evidence, _opts: &Options) {}
