#!/usr/bin/env python3
"""Records the DNS fuzz corpus of tests/fuzz.rs: real replies of dnsmasq (started here, on
loopback, inside a fresh network namespace) to A/AAAA queries. Query id 0x1234.

    sudo ip netns add cdrec && sudo ip -n cdrec link set lo up
    sudo ip netns exec cdrec python3 crates/probe/tests/record-corpus.py crates/probe/tests/corpus/dns
    sudo ip netns del cdrec
"""
import os, socket, struct, subprocess, sys, time

out = sys.argv[1]
d = subprocess.Popen(["dnsmasq", "--keep-in-foreground", "--no-hosts", "--no-resolv", "--conf-file=/dev/null",
                      "--bind-interfaces", "--listen-address=127.0.0.1", "--port=5353", "--user=root",
                      "--host-record=api.lab,10.77.0.2,fd77::2", "--host-record=many.lab,10.0.0.1",
                      "--host-record=many.lab,10.0.0.2", "--cname=alias.lab,api.lab", "--local=/lab/",
                      "--pid-file=/tmp/cdrec-dnsmasq.pid"])
time.sleep(0.5)
def q(name, qtype):
    body = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + body + struct.pack(">HH", qtype, 1)
for name, qt, tag in (("api.lab", 1, "a"), ("api.lab", 28, "aaaa"), ("many.lab", 1, "a-two"),
                      ("alias.lab", 1, "cname-a"), ("none.lab", 1, "nxdomain"), ("many.lab", 28, "nodata-aaaa")):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(q(name, qt), ("127.0.0.1", 5353))
    open(os.path.join(out, f"{tag}-{name}"), "wb").write(s.recv(4096))
d.kill()
