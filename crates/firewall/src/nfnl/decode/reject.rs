//! `reject` statements as the action they set and as nft prints them.

use super::rule::Dec;
use crate::model::Action;
use crate::nfnl::expr::*;
use conndoc_facts::firewall::RejectWith;
use conndoc_facts::Family;

impl Dec<'_> {
    pub(super) fn reject(&mut self, ty: u32, code: u8) {
        let fam = match (ty, self.family) {
            (1, _) => "tcp",
            (2, _) => "icmpx",
            (_, NfFamily::IP) => "icmp",
            (_, NfFamily::IP6) => "icmpv6",
            _ if self.nfproto == Some(Family::Ipv6) => "icmpv6",
            _ => "icmp",
        };
        let code_name = match (fam, code) {
            ("icmp", 0) => "net-unreachable",
            ("icmp", 1) => "host-unreachable",
            ("icmp", 2) => "prot-unreachable",
            ("icmp", 3) => "port-unreachable",
            ("icmp", 9) => "net-prohibited",
            ("icmp", 10) => "host-prohibited",
            ("icmp", 13) => "admin-prohibited",
            ("icmpv6", 0) => "no-route",
            ("icmpv6", 1) => "admin-prohibited",
            ("icmpv6", 3) => "addr-unreachable",
            ("icmpv6", 4) => "port-unreachable",
            ("icmpv6", 5) => "policy-fail",
            ("icmpv6", 6) => "reject-route",
            ("icmpx", 0) => "no-route",
            ("icmpx", 1) => "port-unreachable",
            ("icmpx", 2) => "host-unreachable",
            ("icmpx", 3) => "admin-prohibited",
            _ => "",
        };
        if fam != "tcp" && code_name.is_empty() {
            self.unknown(format!("reject type {ty} code {code}"));
            self.piece(format!("reject type {ty} code {code}"));
            return;
        }
        // nft prints the `meta l4proto tcp` a bare `reject with tcp reset` depends on in an
        // inet table, and leaves it out in an ip or ip6 one.
        let with = if fam == "tcp" {
            if matches!(self.family, NfFamily::IP | NfFamily::IP6) {
                self.hide(self.l4_piece);
            }
            RejectWith::TcpReset
        } else {
            if fam != "icmpx" {
                self.hide(self.nfproto_piece);
            }
            RejectWith::Icmp { family: fam.into(), code: code_name.into() }
        };
        // The default reject of the table's family prints as plain `reject`.
        let default = code_name == "port-unreachable"
            && matches!(
                (self.family, fam),
                (NfFamily::IP, "icmp") | (NfFamily::IP6, "icmpv6") | (NfFamily::INET | NfFamily::BRIDGE, "icmpx")
            );
        let text = match &with {
            _ if default => "reject".to_string(),
            RejectWith::TcpReset => "reject with tcp reset".into(),
            RejectWith::Icmp { family, code } => format!("reject with {family} {code}"),
        };
        self.piece(text);
        self.set_action(Action::Reject(with));
    }
}
