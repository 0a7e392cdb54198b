"""Finding and resetting the runtime process from the agent.

The agent does not start the runtime in a pod (it runs in the `function` container; the pod shares one PID
namespace), so it identifies the runtime by the TCP connection the runtime uses for the Runtime API: the
connection's client port -> the socket inode in /proc/net/tcp{,6} -> the process holding that inode in
/proc/<pid>/fd. Parsing is pure; the /proc reads are thin wrappers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import struct
import termios
from collections.abc import Iterable

log = logging.getLogger(__name__)

_TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def socket_inodes(table_text: str, local_port: int, remote_port: int) -> list[int]:
    """Inodes of the sockets in a /proc/net/tcp table with the given local and remote ports."""
    found = []
    for line in table_text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10:
            continue
        try:
            lport = int(cols[1].rsplit(":", 1)[1], 16)
            rport = int(cols[2].rsplit(":", 1)[1], 16)
            inode = int(cols[9])
        except (IndexError, ValueError):
            continue
        if lport == local_port and rport == remote_port and inode:
            found.append(inode)
    return found


def pids_holding(inodes: Iterable[int], proc: str = "/proc", first_only: bool = False) -> list[int]:
    """PIDs of the processes with an open file descriptor on one of the socket inodes (newest first)."""
    wanted = {f"socket:[{i}]" for i in inodes}
    if not wanted:
        return []
    me = os.getpid()
    pids = []
    # Newest first: the runtime is usually among the most recent processes, so the scan ends early.
    for pid in sorted((int(e) for e in os.listdir(proc) if e.isdigit()), reverse=True):
        if pid == me:
            continue
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in wanted:
                    pids.append(pid)
                    break
            except OSError:
                continue
        if pids and first_only:
            break
    return pids


def find_peer_pid(client_port: int, server_port: int) -> int | None:
    """The PID of the local process whose TCP connection from client_port reaches our server_port."""
    inodes: list[int] = []
    for table in _TCP_TABLES:
        try:
            with open(table) as f:
                inodes += socket_inodes(f.read(), client_port, server_port)
        except OSError:
            continue
    # The newest holder: a forked child sharing the socket is rare (Python closes fds on exec), and ending the
    # scan early keeps this cheap on a busy machine.
    pids = pids_holding(inodes, first_only=True)
    return pids[0] if pids else None


def kill_runtime(pid: int) -> None:
    """SIGKILL the runtime process, and its process group when it leads one that is not ours."""
    try:
        pgid = os.getpgid(pid)
        if pgid == pid and pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)  # handler subprocesses go too, as in a fresh Lambda sandbox
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def children(pid: int) -> list[int]:
    """The process's direct children (from /proc/<pid>/task/<pid>/children; empty if it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


_status_fds: dict[int, int] = {}


def max_rss_mb(pid: int) -> int | None:
    """The process's peak resident memory (VmHWM) in MB, for REPORT's Max Memory Used.

    Read on every invocation, so the status file stays open and is re-read with pread (procfs regenerates it).
    """
    fd = _status_fds.get(pid)
    try:
        if fd is None:
            fd = _status_fds[pid] = os.open(f"/proc/{pid}/status", os.O_RDONLY)
        data = os.pread(fd, 4096, 0)
    except OSError:  # the process is gone
        if fd is not None:
            os.close(_status_fds.pop(pid))
        return None
    at = data.find(b"VmHWM:")
    if at < 0:
        return None
    try:
        return max(1, round(int(data[at + 6:data.index(b"kB", at)]) / 1024))
    except ValueError:
        return None


def forget(pid: int) -> None:
    """Drop what is kept open for a process that has exited."""
    fd = _status_fds.pop(pid, None)
    if fd is not None:
        os.close(fd)


def open_pidfd(pid: int) -> int | None:
    """A pidfd that becomes readable when the process exits (works for non-children in a shared PID namespace)."""
    try:
        return os.pidfd_open(pid)
    except OSError as e:
        log.warning("cannot watch runtime pid %d for exit: %s", pid, e)
        return None


def unread_output(pid: int) -> int | None:
    """Bytes the runtime wrote to its stdout pipe that nobody has read yet (None if stdout is not a pipe).

    The bootstrap forwards that pipe to the agent's log stream; an empty pipe means the runtime's output so far
    is on its way or arrived, which is what LogType=Tail waits for.
    """
    path = f"/proc/{pid}/fd/1"
    try:
        if not os.readlink(path).startswith("pipe:"):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return None
    finally:
        os.close(fd)
