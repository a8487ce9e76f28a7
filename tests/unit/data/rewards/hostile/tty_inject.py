# kind: injects keystrokes into a terminal (TIOCSTI)
# expected: ["injected"]
import fcntl, termios
ok = False
for fd in range(3):
    try:
        fcntl.ioctl(fd, termios.TIOCSTI, b"x")
        ok = True
    except OSError:
        pass
print("injected" if ok else "blocked")
