#!/bin/sh
# Re-creates the seed corpus of the `capture` fuzz target from the lab's own kernel MPTCP traffic:
# a `tcpdump -i any` capture (Linux cooked v2), an Ethernet capture of one line, a pcapng slice
# from mid-connection, and a file cut mid-packet. Needs root, tcpdump, editcap (tshark's
# package) and python3 (for a kernel MPTCP client and server).
set -eu
cd "$(dirname "$0")/.."
out=fuzz/corpus/capture
mkdir -p "$out"
mpbond=./target/release/mpbond
[ -x "$mpbond" ] || cargo build --release --quiet
lab=seeds$$
tmp=$(mktemp -d)
trap '$mpbond lab down $lab >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
$mpbond lab up --name $lab --line a:unlimited:2ms --line b:unlimited:2ms >/dev/null
for ns in $lab-gw $lab-vps; do
    ip netns exec $ns sysctl -qw net.mptcp.checksum_enabled=1
    ip -n $ns mptcp limits set subflows 4 add_addr_accepted 4
done
ip -n $lab-vps mptcp endpoint add 10.2.0.1 dev b signal id 2
ip -n $lab-gw mptcp endpoint add 10.2.0.2 dev b subflow id 2
cat > "$tmp/server.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.1.0.1", int(sys.argv[1]))); s.listen(1)
c, _ = s.accept()
while c.recv(65536): pass
PY
cat > "$tmp/client.py" <<'PY'
import socket, sys, time
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
c.connect(("10.1.0.1", int(sys.argv[1])))
for _ in range(int(sys.argv[2])):
    c.sendall(b"x" * int(sys.argv[3])); time.sleep(0.03)
c.close()
PY
capture() { # interface, port, chunks, chunk size, file
    ip netns exec $lab-gw tcpdump -i "$1" -s 0 -U -w "$5" tcp 2>"$tmp/tcpdump.err" &
    dump=$!
    until grep -q "listening on" "$tmp/tcpdump.err"; do sleep 0.1; done
    ip netns exec $lab-vps python3 "$tmp/server.py" "$2" & srv=$!
    sleep 0.3
    ip netns exec $lab-gw python3 "$tmp/client.py" "$2" "$3" "$4"
    wait $srv; sleep 0.5; kill $dump; wait $dump || true
}
capture any 5001 30 20000 "$tmp/any.pcap"
capture a 5002 20 3000 "$tmp/eth.pcap"
editcap -r "$tmp/any.pcap" "$out/kernel-sll2.pcap" 1-40
editcap -r -F pcapng "$tmp/any.pcap" "$out/kernel-join.pcapng" 30-60
editcap -r "$tmp/eth.pcap" "$out/ethernet.pcap" 1-30
head -c 3000 "$out/kernel-sll2.pcap" > "$out/cut-mid-packet.pcap"
ls -l "$out"
