//! Packet evidence during a probe: AF_PACKET capture with a BPF filter, TTLs, ICMP, pcap output.
