# kind: network: connects to a TCP server on the host's loopback
# expected: ["connected"]
import socket
try:
    s = socket.create_connection(("127.0.0.1", {{PORT}}), timeout=2)
    s.sendall(b"hello from the sandbox")
    print("connected")
except OSError as exc:
    print("blocked", exc)
