"""The sandbox's filesystem as the harness sees it: the unshare backend's jail, and emptying scratch space.

Prepended to sandbox_harness.py (the two run as one `python -c` text); standard library only.

`enter_jail`, run by the harness before anything untrusted starts when bubblewrap is not installed:
`unshare --pid --fork --net --mount --ipc --uts` (plus `--user --map-root-user` when not started as root)
gives the harness fresh namespaces in which it may mount; this builds what bubblewrap would: a new tmpfs
root holding read-only binds of /usr, the Python installation and a few /etc files, a fresh /proc, a minimal
/dev, a size-limited /tmp; then `pivot_root` into it, detach the host's root, make the new root read-only and
scrub the environment. Last, it gives up all privilege: started as root, it becomes uid 65534 (a namespaced
root would still be uid 0 to the kernel, which may write host sysctls); in a user namespace, it drops every
capability. Either way the bounding set is emptied and no_new_privs set.

`wipe`, run by the harness after each program in a warm sandbox (either backend): /tmp and /dev/shm emptied.
"""

import ctypes
import os
import platform

_libc = ctypes.CDLL(None, use_errno=True)
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126}, "aarch64": {"pivot_root": 41, "capset": 91}}
_DEVICES = ("null", "zero", "full", "random", "urandom")


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _locked_flags(path):
    # A remount inside a user namespace must keep the flags the host mount already has.
    f = os.statvfs(path).f_flag
    return (f & os.ST_NOSUID and _MS_NOSUID) | (f & os.ST_NODEV and _MS_NODEV) | (f & os.ST_NOEXEC and _MS_NOEXEC)


def _bind_ro(source, target):
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, _MS_BIND | _MS_REC)
    _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _locked_flags(source))


def _scratch_dir(binds: list[str]) -> str:
    """An existing directory that is neither inside nor above any path to bind."""
    for candidate in ("/tmp", "/mnt", "/media", "/srv", "/opt", "/var/tmp", "/home"):
        clear = all(os.path.commonpath([candidate, b]) not in (candidate, b) for b in binds)
        if os.path.isdir(candidate) and not os.path.islink(candidate) and clear:
            return candidate
    raise OSError("no scratch directory outside the interpreter's paths; install bubblewrap")


def enter_jail(spec):
    calls = _SYSCALLS.get(platform.machine())
    if calls is None:
        raise OSError(f"the unshare sandbox does not support {platform.machine()}; install bubblewrap")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing below propagates to the host
    # The scratch mount hides what it covers (in this namespace only), so it must not cover anything we bind:
    # the interpreter may live under /tmp (a checkout there), /opt, and so on.
    scratch = _scratch_dir(["/usr", *spec["binds"]])
    _mount("tmpfs", scratch, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=700")
    new = scratch + "/root"
    os.mkdir(new)
    _mount("tmpfs", new, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,mode=755")
    # The sandbox's /tmp first: binds below it (an interpreter under /tmp) then land on top of it.
    os.mkdir(new + "/tmp")
    _mount("tmpfs", new + "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={spec['tmp_size_mb']}m,mode=1777")
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            os.symlink(os.readlink(top), new + top)
        elif os.path.isdir(top):
            _bind_ro(top, new + top)
    for path in ["/usr", *spec["binds"]]:
        _bind_ro(path, new + path)
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime"):
        if os.path.exists(path):
            _bind_ro(path, new + path)
    os.mkdir(new + "/proc")
    _mount("proc", new + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    os.mkdir(new + "/dev")
    _mount("tmpfs", new + "/dev", "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=64k,mode=755")
    for name in _DEVICES:
        open(f"{new}/dev/{name}", "a").close()
        _mount(f"/dev/{name}", f"{new}/dev/{name}", None, _MS_BIND)
    _mount(None, new + "/dev", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NOEXEC)
    if spec["drop_to_uid"] is None:  # in our own user namespace, this sysctl is ours; outside one it is the host's
        _forbid_nested_user_namespaces(new + "/proc/sys/user/max_user_namespaces")
    os.chdir(new)
    _check(_libc.syscall(calls["pivot_root"], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", _MNT_DETACH), "detach the host root")
    os.chdir("/")
    _mount(None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    _libc.sethostname(b"sandbox", 7)
    os.environ.clear()
    os.environ.update(spec["env"])
    os.chdir("/tmp")
    if spec["drop_to_uid"] is not None:
        _become_unprivileged(spec["drop_to_uid"])
    else:
        _drop_capabilities(calls["capset"])


def _forbid_nested_user_namespaces(sysctl):
    # As bubblewrap's --disable-userns: no fresh capabilities inside the sandbox. Best effort (older kernels).
    try:
        with open(sysctl, "w") as f:
            f.write("0")
    except OSError:
        pass


def _become_unprivileged(uid):
    # Started as real root (no user namespace, so that uid 0 never meets host files or sysctls): give up the
    # capability bounding set, then every id; changing the uid away from 0 clears all capabilities.
    PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24
    for cap in range(64):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _drop_capabilities(capset_nr):
    PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 38, 24
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    for cap in range(64):
        _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last capability: ignored

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()
    _check(_libc.syscall(capset_nr, ctypes.byref(header), ctypes.byref(data)), "drop capabilities")


SCRATCH = ("/tmp", "/dev/shm")  # the only writable places in either backend


def wipe(tops):
    """Remove everything under the writable directories; True when they are empty afterwards."""
    try:
        for top in tops:
            _empty(top)
    except OSError:
        pass
    finally:
        os.chdir("/tmp")
    return not any(_listdir(top) for top in tops)


def _empty(top):
    # Iterative and by relative names from inside each directory: a program may leave a chain deeper than
    # any recursion limit and longer than PATH_MAX. Directories are made accessible first (a program may
    # have locked them); every entry is the sandbox user's own. No entry is tried twice at one level.
    os.chdir(top)
    stack = [(None, set())]  # (the directory entered, names in it that could not be removed)
    while True:
        for name in _listdir("."):
            if name in stack[-1][1] or _remove(name):
                continue
            try:
                os.chmod(name, 0o700)
                os.chdir(name)  # not a link: _remove unlinks those
            except OSError:
                stack[-1][1].add(name)
                continue
            stack.append((name, set()))
            break
        else:
            name, _ = stack.pop()
            if name is None:
                return
            os.chdir("..")
            if not _remove(name):
                stack[-1][1].add(name)


def _remove(name):
    for remove in (os.unlink, os.rmdir):
        try:
            remove(name)
            return True
        except OSError:
            pass
    return False


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []
