use conndoc_facts::{ClientFacts, ConnectProbe, Port};
use std::net::IpAddr;

pub fn basics() -> ClientFacts {
    ClientFacts::default()
}

pub fn after_probe(_c: &mut ClientFacts, _probes: &[ConnectProbe], _addrs: &[IpAddr], _port: Port) {}
