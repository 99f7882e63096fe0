"""A pg_auto_failover formation on loopback: a monitor, a primary and a synchronous secondary.

Each of the three is one `pg_autoctl` process (the keeper) that runs its
PostgreSQL as a child, started in a session of its own so that `stop()` can end
the whole tree. The monitor health-checks the nodes, and each keeper reports its
node's state to the monitor every second; the monitor decides, the keepers act
(promote, demote, rewind, change `synchronous_standby_names`).

    with auto_failover_formation() as formation:
        url = formation.url()           # both nodes, target_session_attrs=read-write
        formation.kill_postmaster(formation.primary())
        formation.wait_for_primary(other_than=old)

Every folder is a temporary one, every port a free loopback port, and every
connection is trusted (`--auth trust --no-ssl`): a throwaway, never a model of
a production set-up. As root, everything runs as the `postgres` user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.postgres import (
    as_postgres,
    cluster_user,
    free_port,
    initdb,
    pg_bin,
    pg_ctl_stop,
    psql,
    reachable_by_postgres,
)

PG_AUTOCTL_CANDIDATES = ["/usr/bin/pg_autoctl", str(pg_bin() / "pg_autoctl")]

# pg_autoctl sizes shared_buffers from the machine's memory (6 GB here); these
# throwaways need little. postgresql.auto.conf is read after pg_autoctl's own file,
# and pg_basebackup copies it to the secondary.
NODE_CONF = {"shared_buffers": "128MB", "max_connections": "200"}
MONITOR_CONF = {"shared_buffers": "32MB", "max_connections": "50"}

# The states in which a node takes writes. `wait_primary` is a primary without a
# healthy synchronous standby: pg_auto_failover has set synchronous_standby_names
# to '' so that commits do not wait for one.
WRITABLE_STATES = ("single", "primary", "wait_primary")


def pg_autoctl() -> str:
    for candidate in PG_AUTOCTL_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    found = shutil.which("pg_autoctl")
    if found:
        return found
    raise RuntimeError("pg_autoctl not found: `make failover-tools` installs it")


@dataclass
class Node:
    """One member of the formation: its name, port, data folder and keeper process."""

    name: str
    port: int
    pgdata: Path
    keeper: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def postmaster_pid(self) -> int:
        """The running postmaster's pid, from the first line of postmaster.pid."""
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])


@dataclass(frozen=True)
class NodeState:
    reported: str
    assigned: str


class FailoverTimeout(RuntimeError):
    """The formation did not reach the state waited for in time."""


class AutoFailoverFormation:
    """`pg_autoctl` monitor + primary + secondary on 127.0.0.1; `stop()` ends and removes all."""

    def __init__(
        self,
        *,
        database: str = "boxoffice",
        monitor_settings: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="boxoffice-paf-"))
        self.database = database
        self.user = cluster_user()
        # The monitor's pgautofailover.* settings (health checks, timeouts).
        self.monitor_settings = monitor_settings or {}
        self.monitor = Node("monitor", free_port(), self.root / "monitor")
        self.nodes = [
            Node("node1", free_port(), self.root / "node1"),
            Node("node2", free_port(), self.root / "node2"),
        ]

    # -- addresses ---------------------------------------------------------------------

    def url(self) -> str:
        """Both nodes in one URL: the driver connects to whichever takes writes."""
        hosts = "&".join(f"host=127.0.0.1:{node.port}" for node in self.nodes)
        return f"postgresql://{self.user}@/{self.database}?{hosts}&target_session_attrs=read-write"

    def node_url(self, node: Node) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{node.port}/{self.database}"

    def monitor_uri(self) -> str:
        return f"postgres://autoctl_node@127.0.0.1:{self.monitor.port}/pg_auto_failover?sslmode=disable"

    # -- life --------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> AutoFailoverFormation:
        """The monitor, then the primary, then the secondary; back once replication is sync."""
        reachable_by_postgres(self.root)
        deadline = time.monotonic() + timeout
        self._start_monitor(deadline)
        primary, secondary = self.nodes
        self._start_node(primary)
        self.wait_until(
            lambda states: states.get(primary.name) == NodeState("single", "single"),
            deadline - time.monotonic(),
            "the first node to run alone",
        )
        self._start_node(secondary)
        # pg_basebackup waits for a checkpoint, which PostgreSQL spreads over minutes
        # unless one is asked for at once.
        self.wait_until(
            lambda states: (
                states.get(primary.name) == NodeState("primary", "primary")
                and states.get(secondary.name) == NodeState("secondary", "secondary")
            ),
            deadline - time.monotonic(),
            "a primary with a synchronous secondary",
            meanwhile=lambda: self._checkpoint(primary),
        )
        return self

    def _start_monitor(self, deadline: float) -> None:
        initdb(self.monitor.pgdata, self.user)
        self._append_auto_conf(self.monitor.pgdata, {**MONITOR_CONF, **self.monitor_settings})
        self._autoctl_run(
            "create",
            "monitor",
            "--pgdata",
            str(self.monitor.pgdata),
            "--pgport",
            str(self.monitor.port),
            "--hostname",
            "127.0.0.1",
            "--auth",
            "trust",
            "--no-ssl",
            "--pgctl",
            str(pg_bin() / "pg_ctl"),
        )
        # `create monitor` has no --listen: without this it would listen on every address.
        self._autoctl_run(
            "config",
            "set",
            "--pgdata",
            str(self.monitor.pgdata),
            "postgresql.listen_addresses",
            "127.0.0.1",
        )
        self.monitor.keeper = self._spawn(
            self.monitor, ["run", "--pgdata", str(self.monitor.pgdata)]
        )
        while True:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.monitor_sql("SELECT 1")
                return
            if time.monotonic() > deadline:
                raise FailoverTimeout(f"the monitor did not start:\n{self.log(self.monitor)}")
            time.sleep(0.2)

    def _start_node(self, node: Node) -> None:
        if node is self.nodes[0]:
            # The first node's cluster is made here, to be tuned before it first starts;
            # the second is made by pg_autoctl with pg_basebackup from the first.
            initdb(node.pgdata, self.user)
            self._append_auto_conf(node.pgdata, NODE_CONF)
        node.keeper = self._spawn(
            node,
            [
                "create",
                "postgres",
                "--pgdata",
                str(node.pgdata),
                "--pgport",
                str(node.port),
                "--pghost",
                str(self.root),
                "--listen",
                "127.0.0.1",
                "--hostname",
                "127.0.0.1",
                "--name",
                node.name,
                "--dbname",
                self.database,
                "--auth",
                "trust",
                "--no-ssl",
                "--monitor",
                self.monitor_uri(),
                "--pgctl",
                str(pg_bin() / "pg_ctl"),
                "--run",
            ],
        )

    def _append_auto_conf(self, pgdata: Path, settings: dict[str, str]) -> None:
        settings = {**settings, "unix_socket_directories": f"'{self.root}'"}
        with (pgdata / "postgresql.auto.conf").open("a") as handle:
            handle.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _environment(self) -> dict[str, str]:
        # pg_autoctl keeps its configuration and state under the XDG folders: here,
        # not in the postgres user's home.
        return {
            **os.environ,
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "XDG_DATA_HOME": str(self.root / "share"),
            "XDG_RUNTIME_DIR": str(self.root / "run"),
            "PG_CONFIG": str(pg_bin() / "pg_config"),
            "PGHOST": str(self.root),
        }

    def _autoctl_run(self, *args: str) -> str:
        result = subprocess.run(
            as_postgres([pg_autoctl(), *args]),
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_autoctl {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def _spawn(self, node: Node, args: list[str]) -> subprocess.Popen[bytes]:
        with self.log_path(node).open("ab") as log:
            return subprocess.Popen(
                as_postgres([pg_autoctl(), *args]),
                env=self._environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_path(self, node: Node) -> Path:
        return self.root / f"{node.name}.log"

    def log(self, node: Node) -> str:
        path = self.log_path(node)
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """End every keeper and its PostgreSQL, whatever state they are in; remove the files."""
        members = [*self.nodes, self.monitor]
        for member in members:
            # SIGQUIT: pg_autoctl's immediate stop, and PostgreSQL's immediate shutdown
            # (which still removes its shared memory, unlike SIGKILL). Nothing is kept.
            _signal_group(member.keeper, signal.SIGQUIT)
        deadline = time.monotonic() + 20
        for member in members:
            if member.keeper is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    member.keeper.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(member.keeper, signal.SIGKILL)
            if member.keeper is not None:
                member.keeper.wait(timeout=10)
            # A postmaster that outlived its keeper (not in its process group) stops too.
            if (member.pgdata / "postmaster.pid").exists():
                with contextlib.suppress(subprocess.CalledProcessError):
                    pg_ctl_stop(member.pgdata, timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- what the monitor knows --------------------------------------------------------

    def monitor_sql(self, sql: str) -> str:
        return psql(self.monitor.port, sql, user="autoctl_node", database="pg_auto_failover")

    def node_sql(self, node: Node, sql: str, database: str | None = None) -> str:
        return psql(node.port, sql, user=self.user, database=database or self.database)

    def states(self) -> dict[str, NodeState]:
        """Each node's state as its keeper last reported it, and as the monitor assigned it."""
        rows = self.monitor_sql(
            "SELECT nodename, reportedstate, goalstate FROM pgautofailover.node ORDER BY nodeid"
        )
        states = {}
        for row in rows.splitlines():
            name, reported, assigned = row.split("|")
            states[name] = NodeState(reported, assigned)
        return states

    def writable(self, states: dict[str, NodeState]) -> Node | None:
        """The node that takes writes in `states` (assigned and reported so), if one does."""
        for node in self.nodes:
            state = states.get(node.name)
            if state and state.reported in WRITABLE_STATES and state.assigned == state.reported:
                return node
        return None

    def primary(self) -> Node:
        """The node that takes writes now."""
        states = self.states()
        node = self.writable(states)
        if node is None:
            raise LookupError(f"no primary now: {states}")
        return node

    def wait_for_primary(self, *, other_than: Node, timeout: float = 120.0) -> Node:
        """Wait until a node other than `other_than` takes writes, and return it."""
        states = self.wait_until(
            lambda states: self.writable(states) not in (None, other_than),
            timeout,
            f"a primary other than {other_than.name}",
        )
        promoted = self.writable(states)
        assert promoted is not None
        return promoted

    def wait_until_settled(self, timeout: float = 120.0) -> Node:
        """Wait until a node takes writes and every node whose keeper runs is where it was
        assigned (no transition under way); return the node that takes writes."""

        def settled(states: dict[str, NodeState]) -> bool:
            return self.writable(states) is not None and all(
                states[node.name].reported == states[node.name].assigned
                for node in self.nodes
                if node.keeper is not None and node.keeper.poll() is None
            )

        promoted = self.writable(self.wait_until(settled, timeout, "a settled formation"))
        assert promoted is not None
        return promoted

    def wait_until(
        self,
        ready: Callable[[dict[str, NodeState]], bool],
        timeout: float,
        what: str,
        *,
        meanwhile: Callable[[], None] | None = None,
    ) -> dict[str, NodeState]:
        deadline = time.monotonic() + timeout
        states: dict[str, NodeState] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.CalledProcessError):
                states = self.states()
                if ready(states):
                    return states
            if meanwhile is not None:
                with contextlib.suppress(subprocess.CalledProcessError):
                    meanwhile()
            time.sleep(0.2)
        logs = "\n".join(f"--- {n.name}\n{self.log(n)[-3000:]}" for n in self.nodes)
        raise FailoverTimeout(f"waited {timeout:.0f} s for {what}; states {states}\n{logs}")

    def _checkpoint(self, node: Node) -> None:
        self.node_sql(node, "CHECKPOINT", database="postgres")

    def synchronous_standby_names(self, node: Node) -> str:
        return self.node_sql(node, "SHOW synchronous_standby_names")

    # -- faults ------------------------------------------------------------------------

    def kill_postmaster(self, node: Node) -> int:
        """kill -9 the node's postmaster (its keeper lives on, and reports it); the pid killed."""
        pid = node.postmaster_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_node(self, node: Node) -> None:
        """kill -9 the keeper and its PostgreSQL at once: the machine is gone."""
        _signal_group(node.keeper, signal.SIGKILL)

    def __enter__(self) -> AutoFailoverFormation:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes] | None, signum: int) -> None:
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)


@contextlib.contextmanager
def auto_failover_formation(
    *, monitor_settings: dict[str, str] | None = None
) -> Iterator[AutoFailoverFormation]:
    """A running formation, ended and removed however the block exits."""
    with AutoFailoverFormation(monitor_settings=monitor_settings) as formation:
        yield formation
