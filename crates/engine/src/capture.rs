//! Capture stage (issue 4): packets of the probe's flows while connecting.
use crate::Options;
use conndoc_facts::Evidence;
use std::net::IpAddr;

pub(crate) struct CaptureStage;

pub(crate) fn begin(_ev: &Evidence, _opts: &Options, _addrs: &[IpAddr]) -> Option<CaptureStage> {
    None
}

pub(crate) fn end(_stage: Option<CaptureStage>, _ev: &mut Evidence, _opts: &Options) {}
