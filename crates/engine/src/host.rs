//! Host stage (issue 3): counters before the probe, inspection after it.
use crate::Options;
use conndoc_facts::Evidence;
use std::net::IpAddr;

pub(crate) struct HostStage;

pub(crate) fn begin(_ev: &Evidence, _opts: &Options, _addrs: &[IpAddr]) -> Option<HostStage> {
    None
}

pub(crate) fn end(_stage: Option<HostStage>, _ev: &mut Evidence, _opts: &Options) {}
