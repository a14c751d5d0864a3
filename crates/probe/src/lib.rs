//! Client side of a diagnosis: resolution (system resolver, hosts file, DNS), one classified
//! connect per address, and the client host's route, neighbour and local-port facts.

pub mod client;
pub mod connect;
pub mod resolve;
pub mod time;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
}
