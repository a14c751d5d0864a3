use conndoc_facts::{Family, Resolution, Target};
use std::net::IpAddr;
use std::time::Duration;

pub fn resolve(_t: &Target, _f: Option<Family>, _timeout: Duration) -> Resolution {
    Resolution::default()
}

pub fn addresses_to_probe(_r: &Resolution, _f: Option<Family>) -> Vec<IpAddr> {
    Vec::new()
}
