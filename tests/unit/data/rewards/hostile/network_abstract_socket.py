# kind: network: connects to an abstract unix socket of the host
# expected: ["connected"]
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect("\0{{ABSTRACT}}")
    s.sendall(b"hello")
    print("connected")
except OSError as exc:
    print("blocked", exc)
