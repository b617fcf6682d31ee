"""A real ssh peer for tests: an sshd in a network namespace of its own.

``SshPeer`` makes a namespace ``tandem-peer-<random>``, a veth pair with one end
in it and a private /30 on that link only (host side .1, peer side .2), and runs
``/usr/sbin/sshd -D`` inside it with a host key and a client key made for the
test. Only the network is isolated: the peer sees the same filesystem, so a
test can look at DEST directly. ``rsh`` is the ``--rsh`` command for tandem (it
shares one ssh connection per peer through a ControlMaster in the peer's temp
folder). ``close()`` kills sshd, every process left in the namespace and the
ControlMaster, then deletes the veth pair and the namespace.

Needs root and ``ip netns``; without them ``running_peer()`` FAILS the test
(never skips: CI has root).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
# The peer is another host: this machine's /root/.bashrc (pyenv init, which takes
# a lock that a killed session leaves behind: every ssh command then hung for
# 60 s) is hidden in sshd's own mount namespace (ip netns exec makes one).
_PEER_SHELL = '[ ! -e /root/.bashrc ] || mount --bind /dev/null /root/.bashrc; exec "$1" -D -e -f "$2"'
PORT = 22
_SUBNET_BASE = "10.213"  # a /30 out of 10.213.0.0/16, on the veth link only


class PeerError(RuntimeError):
    pass


def _sh(*argv: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise PeerError(f"{shlex.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def require_netns() -> None:
    """Fail (never skip) when this machine cannot make a peer."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (a network namespace needs root)")
    for tool in ("ip", "ssh", "ssh-keygen", "rsync"):
        if shutil.which(tool) is None:
            problems.append(f"{tool!r} not found")
    if not os.access(SSHD, os.X_OK):
        problems.append(f"{SSHD} not found (apt-get install -y openssh-server)")
    if not problems and _sh("ip", "netns", "list", check=False).returncode != 0:
        problems.append("'ip netns' does not work")
    if problems:
        pytest.fail("ssh peer tests need root, iproute2, openssh-server and rsync: " + "; ".join(problems))


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 address and route of this host, as networks."""
    out = _sh("ip", "-4", "-o", "addr", "show").stdout + _sh("ip", "-4", "route", "show").stdout
    nets = []
    for word in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", out):
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.IPv4Network(word, strict=False))
    return nets


class SshPeer:
    def __init__(self) -> None:
        tag = secrets.token_hex(4)
        self.ns = f"tandem-peer-{tag}"
        self.host_if = f"tph{tag}"
        self.peer_if = f"tpp{tag}"
        # short, so the ControlPath (plus ssh's temporary suffix) fits in a unix socket name
        self.dir = Path(tempfile.mkdtemp(prefix="tpeer-"))
        self.key = self.dir / "id"
        self.control = self.dir / "cm"
        self.log = self.dir / "sshd.log"
        self.config = self.dir / "sshd_config"
        self.pid_file = self.dir / "sshd.pid"
        self.host_ip = self.peer_ip = ""
        self.sshd: subprocess.Popen[bytes] | None = None
        self._ns_made = self._link_made = False

    # -- setup ------------------------------------------------------------------

    def start(self) -> SshPeer:
        try:
            self._keys()
            self._network()
            self._write_config()
            self.start_sshd()
        except BaseException:
            self.close()
            raise
        return self

    def _keys(self) -> None:
        for name in ("host_key", "id"):
            _sh(
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"tandem-test-{name}",
                "-f",
                str(self.dir / name),
            )
        shutil.copy(self.dir / "id.pub", self.dir / "authorized_keys")

    def _pick_subnet(self) -> ipaddress.IPv4Network:
        used = _used_networks()
        for _ in range(100):
            third, fourth = secrets.randbelow(256), 4 * secrets.randbelow(64)
            net = ipaddress.IPv4Network(f"{_SUBNET_BASE}.{third}.{fourth}/30")
            if not any(net.overlaps(u) for u in used):
                return net
        raise PeerError("no free /30 in 10.213.0.0/16")

    def _network(self) -> None:
        net = self._pick_subnet()
        host, peer = list(net.hosts())
        self.host_ip, self.peer_ip = str(host), str(peer)
        _sh("ip", "netns", "add", self.ns)
        self._ns_made = True
        _sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
        self._link_made = True
        _sh("ip", "link", "set", self.peer_if, "netns", self.ns)
        # no IPv6 link-local addresses: nothing but the /30 on this link
        _sh("ip", "link", "set", "dev", self.host_if, "addrgenmode", "none")
        _sh("ip", "-n", self.ns, "link", "set", "dev", self.peer_if, "addrgenmode", "none")
        _sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _sh("ip", "-n", self.ns, "addr", "add", f"{self.peer_ip}/30", "dev", self.peer_if)
        _sh("ip", "link", "set", self.host_if, "up")
        _sh("ip", "-n", self.ns, "link", "set", self.peer_if, "up")
        _sh("ip", "-n", self.ns, "link", "set", "lo", "up")

    def _write_config(self) -> None:
        self.config.write_text(
            f"""\
Port {PORT}
ListenAddress {self.peer_ip}
HostKey {self.dir / "host_key"}
PidFile {self.pid_file}
AuthorizedKeysFile {self.dir / "authorized_keys"}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
MaxSessions 64
MaxStartups 64
Subsystem sftp internal-sftp
"""
        )

    # -- sshd ---------------------------------------------------------------------

    def start_sshd(self, timeout: float = 5.0) -> None:
        """Start sshd (again) on the same address and port; wait until it listens."""
        assert self.sshd is None, "sshd already running"
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        with open(self.log, "ab") as log:
            self.sshd = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, "sh", "-c", _PEER_SHELL, "sshd", SSHD, str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )  # `ip netns exec` execs: this pid is sshd's
        end = time.monotonic() + timeout
        while not self._listening():
            if self.sshd.poll() is not None:
                code = self.sshd.returncode
                self.sshd = None
                raise PeerError(f"sshd exited {code}: {self.log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > end:
                self.stop_sshd()
                raise PeerError(f"sshd not listening after {timeout}s: {self.log.read_text()[-2000:]}")
            time.sleep(0.01)

    def _listening(self) -> bool:
        out = _sh("ip", "netns", "exec", self.ns, "ss", "-Hltn", check=False).stdout
        return f"{self.peer_ip}:{PORT} " in out

    def stop_sshd(self) -> None:
        """Take the peer down: sshd, its sessions, anything else in the namespace,
        and the ControlMaster that would keep an old session alive."""
        proc, self.sshd = self.sshd, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._ns_made:
            self._kill_namespace_processes()
        self._stop_master()

    def _kill_namespace_processes(self) -> None:
        end = time.monotonic() + 5
        while True:
            result = _sh("ip", "netns", "pids", self.ns, check=False)
            pids = [int(p) for p in result.stdout.split() if p.isdigit() and int(p) != os.getpid()]
            alive = [p for p in pids if _alive(p)]
            if not alive or time.monotonic() > end:
                return
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def _stop_master(self) -> None:
        if not self.control.exists():
            return
        check = subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", f"ControlPath={self.control}", "-O", "check", "peer"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        match = re.search(r"pid=(\d+)", check.stderr)
        subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", f"ControlPath={self.control}", "-O", "exit", "peer"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        if match:
            pid = int(match.group(1))
            end = time.monotonic() + 3
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.02)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()

    # -- use ----------------------------------------------------------------------

    @property
    def rsh(self) -> str:
        """The --rsh command for tandem (and rsync -e)."""
        return shlex.join(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-i",
                str(self.key),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "ControlMaster=auto",
                "-o",
                f"ControlPath={self.control}",
                "-o",
                "ControlPersist=60",
            ]
        )

    def link(self, up: bool) -> None:
        """Cut (or restore) the peer's end of the link: packets to it are dropped
        silently, as when a peer host hangs or its network fails."""
        _sh("ip", "-n", self.ns, "link", "set", self.peer_if, "up" if up else "down")

    def dest(self, path: Path | str) -> str:
        return f"root@{self.peer_ip}:{path}"

    def run(self, command: str, timeout: float = 10.0) -> subprocess.CompletedProcess[bytes]:
        """Run a shell COMMAND on the peer over ssh."""
        return subprocess.run(
            [*shlex.split(self.rsh), f"root@{self.peer_ip}", command],
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def reachable(self, timeout: float = 0.5) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.peer_ip, PORT), timeout=timeout):
            return True
        return False

    # -- teardown -----------------------------------------------------------------

    def close(self) -> None:
        """Always safe to call, also after a failed start; errors are collected."""
        errors: list[str] = []
        for step in (
            self.stop_sshd,
            self._delete_link,
            self._delete_namespace,
            lambda: shutil.rmtree(self.dir, ignore_errors=True),
        ):
            try:
                step()
            except Exception as err:
                errors.append(f"{err!r}")
        if errors:
            raise PeerError("ssh peer teardown: " + "; ".join(errors))

    def _delete_link(self) -> None:
        if self._link_made:
            # deleting one end deletes both; gone already if the namespace went first
            if _sh("ip", "link", "show", self.host_if, check=False).returncode == 0:
                _sh("ip", "link", "del", self.host_if)
            self._link_made = False

    def _delete_namespace(self) -> None:
        if self._ns_made:
            _sh("ip", "netns", "del", self.ns)
            self._ns_made = False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def running_peer() -> Iterator[SshPeer]:
    """A started peer, torn down whatever happens (fails when it cannot be made)."""
    require_netns()
    peer = SshPeer().start()
    try:
        yield peer
    finally:
        peer.close()
