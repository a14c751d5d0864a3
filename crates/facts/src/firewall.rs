//! Firewall rulesets and which rule the probe's packet meets. Owned by issue 4.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirewallFacts {}
