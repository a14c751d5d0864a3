//! Packets seen while probing (SYN, SYN-ACK, RST, ICMP) with their TTLs. Owned by issue 4.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureFacts {}
