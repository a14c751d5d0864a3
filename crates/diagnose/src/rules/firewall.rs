use crate::Findings;
use conndoc_facts::Evidence;

pub fn run(_ev: &Evidence, _out: &mut Findings) {}
