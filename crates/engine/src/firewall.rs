//! Firewall stage (issue 4): read the rulesets of the inspected host and evaluate the probe's packet.
use crate::Options;
use conndoc_facts::Evidence;

pub(crate) fn run(_ev: &mut Evidence, _opts: &Options) {}
