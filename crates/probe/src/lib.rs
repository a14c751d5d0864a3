//! Client side of a diagnosis: resolution (system resolver, hosts file, DNS), one classified
//! connect per address, and the client host's route lookups and privileges.

pub mod client;
pub mod connect;
pub mod dns;
pub mod pool;
pub mod resolve;
pub mod time;
