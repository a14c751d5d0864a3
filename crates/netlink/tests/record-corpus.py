#!/usr/bin/env python3
"""Records the fuzz corpus of tests/fuzz.rs: real kernel replies (whole datagrams) to the
dumps conndoc sends, taken inside a fresh network namespace so no machine state is kept.

    sudo ip netns add cdrec && sudo ip -n cdrec link set lo up
    sudo ip netns exec cdrec python3 crates/netlink/tests/record-corpus.py crates/netlink/tests/corpus
    sudo ip netns del cdrec
"""
import socket, struct, sys, os

out = sys.argv[1]
# Sockets in several states for sock_diag to report.
l4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM); l4.bind(("127.0.0.1", 7000)); l4.listen(8)
l6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
l6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); l6.bind(("::1", 7001)); l6.listen(8)
c = socket.create_connection(("127.0.0.1", 7000)); a, _ = l4.accept()
c.shutdown(socket.SHUT_WR)

def dump(proto, ty, payload, name):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
    s.bind((0, 0))
    hdr = struct.pack("=IHHII", 16 + len(payload), ty, 0x301, 1, 0)  # REQUEST|DUMP
    s.send(hdr + payload)
    n = 0
    while True:
        d = s.recv(65536)
        with open(os.path.join(out, f"{name}-{n}.bin"), "wb") as f:
            f.write(d)
        n += 1
        at, end = 0, False
        while at + 16 <= len(d):  # NLMSG_ERROR / NLMSG_DONE anywhere in the datagram ends it
            ln, ty = struct.unpack_from("=IH", d, at)
            end = end or ty in (2, 3)
            at += max(16, (ln + 3) & ~3)
        if end:
            break

for fam, name in ((socket.AF_INET, "diag-v4"), (socket.AF_INET6, "diag-v6")):
    # inet_diag_req_v2: family, protocol, ext (SKV6ONLY|SHUTDOWN asked via attrs), pad, states, id
    req = struct.pack("=BBBBI", fam, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + bytes(48)
    dump(4, 20, req, name)
dump(0, 18, struct.pack("=BxHiII", 0, 0, 0, 0, 0), "route-link")    # RTM_GETLINK, ifinfomsg
dump(0, 22, struct.pack("=BBBBI", 0, 0, 0, 0, 0), "route-addr")     # RTM_GETADDR, ifaddrmsg
dump(0, 30, struct.pack("=BxxxiHBB", 0, 0, 0, 0, 0), "route-neigh") # RTM_GETNEIGH, ndmsg
