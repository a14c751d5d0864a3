//! Facts read on the target host (local, or inside its network namespace): listeners,
//! owning processes, limits, kernel parameters and counters, service manager, logs.
//! Owned by the host-inspection work (issue 3).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {}
