"""A pid file held by an flock for the life of its process.

The lock, not the pid written in the file, is the proof of life: pids are
reused (after a reboot, in another pid namespace), locks die with their
process. Only the holder removes the file, and only while the path still
names the file it locked; a start that is refused leaves it alone.
"""

from __future__ import annotations

import fcntl
import os


class PidFileBusy(RuntimeError):
    """Another live process holds the pid file."""

    def __init__(self, path: str, pid: int | None) -> None:
        who = f"running process {pid}" if pid else "a running process"
        super().__init__(f"pid file {path} is held by {who}")
        self.pid = pid


class PidFile:
    """Held from ``acquire`` until ``release`` (or the process's end)."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: str) -> PidFile:
        """Lock PATH and write our pid into it; PidFileBusy when another process
        holds it, OSError when it cannot be written."""
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise PidFileBusy(path, pid) from None
            except OSError:
                os.close(fd)
                raise
            if _names(path, fd):
                break
            os.close(fd)  # its holder removed it between our open and our lock: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        """Remove the file (if PATH is still ours) and drop the lock."""
        if self._fd is None:
            return
        if _names(self.path, self._fd):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def _names(path: str, fd: int) -> bool:
    """PATH still names the open file FD."""
    try:
        here = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    there = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
