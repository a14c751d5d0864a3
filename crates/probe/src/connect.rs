use conndoc_facts::{ConnectProbe, Port};
use std::net::IpAddr;
use std::time::Duration;

pub fn connect_all(_addrs: &[IpAddr], _port: Port, _timeout: Duration) -> Vec<ConnectProbe> {
    Vec::new()
}
