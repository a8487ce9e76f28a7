# kind: network: DNS query over UDP to a resolver on the host's loopback
# expected: ["resolved"]
import socket
query = bytes.fromhex("abcd01000001000000000000") + b"\x07example\x03com\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
try:
    s.sendto(query, ("127.0.0.1", {{UDP_PORT}}))
    s.recvfrom(512)
    print("resolved")
except OSError as exc:
    print("blocked", exc)
