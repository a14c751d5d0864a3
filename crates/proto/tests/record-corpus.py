#!/usr/bin/env python3
"""Records the fuzz corpus of tests/fuzz.rs from real servers on loopback inside a fresh
network namespace: RESP replies of redis-server, HTTP response heads of busybox httpd and
Python's http.server.

    sudo ip netns add cdrec && sudo ip -n cdrec link set lo up
    sudo ip netns exec cdrec python3 crates/proto/tests/record-corpus.py crates/proto/tests/corpus
    sudo ip netns del cdrec
"""
import os, socket, subprocess, sys, time

out = sys.argv[1]
procs = []

def wait(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); return
        except OSError:
            time.sleep(0.05)

def talk(port, data, idle=0.3):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(data); s.settimeout(idle); got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            got += d
    except socket.timeout:
        pass
    s.close(); return got

procs.append(subprocess.Popen(["redis-server", "--port", "6390", "--save", "", "--appendonly", "no",
                               "--requirepass", "corpus-pw", "--databases", "4"], stdout=subprocess.DEVNULL))
wait(6390)
def resp(*args):
    return b"".join(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in [x.encode() for x in args]) for _ in [0])
for name, cmds in {
    "noauth": [resp("PING")],
    "wrongpass": [resp("AUTH", "nope")],
    "auth-ping-info": [resp("AUTH", "corpus-pw"), resp("PING"), resp("INFO", "server", "clients")],
    "config-get": [resp("AUTH", "corpus-pw"), resp("CONFIG", "GET", "*max*")],
    "select-out-of-range": [resp("AUTH", "corpus-pw"), resp("SELECT", "9")],
    "types": [resp("AUTH", "corpus-pw"), resp("SET", "k", "v"), resp("GET", "k"), resp("GET", "none"),
              resp("INCR", "n"), resp("RPUSH", "l", "a", "b"), resp("LRANGE", "l", "0", "-1"), resp("HELLO", "3")],
}.items():
    with open(os.path.join(out, "resp", name), "wb") as f:
        f.write(talk(6390, b"".join(cmds)))

www = "/tmp/cdrec-www"; os.makedirs(www, exist_ok=True)
open(os.path.join(www, "index.html"), "w").write("hello\n")
procs.append(subprocess.Popen(["busybox", "httpd", "-f", "-p", "127.0.0.1:8090", "-h", www]))
procs.append(subprocess.Popen([sys.executable, "-m", "http.server", "8091", "--bind", "127.0.0.1", "-d", www],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
wait(8090); wait(8091)
for port, server in ((8090, "busybox"), (8091, "python")):
    for name, req in {"200": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                      "404": b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                      "bad": b"BOGUS\r\n\r\n"}.items():
        with open(os.path.join(out, "http", f"{server}-{name}"), "wb") as f:
            f.write(talk(port, req))
for p in procs:
    p.kill()
