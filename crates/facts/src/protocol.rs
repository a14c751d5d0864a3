//! What the service said at its protocol (Redis, HTTP, TLS). Owned by issue 5.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtocolFacts {}
