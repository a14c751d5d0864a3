//! Reads nftables and iptables rulesets and evaluates which rule the probe's packet meets.
