"""The suite's own sshd works the way the SSH step operator will use it.

Real OpenSSH server, real `ssh` client and asyncssh; the test user is not root.
Also pins down the sshd behaviour the operator relies on: a detached (`setsid nohup`)
step survives its session and a dropped connection, and dies with `kill -- -PGID`.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from fixtures.engines import require_or_skip
from fixtures.sshd import SSHServer


def _asyncssh():
    try:
        import asyncssh
    except ImportError:
        require_or_skip("asyncssh is not installed; pip install -e '.[ssh]'")
    return asyncssh


def _wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _running(server: SSHServer, *commands: str) -> list[str]:
    """This session's remote processes whose command line is one of ``commands``."""
    return [line for line in server.processes() if line.split(None, 1)[1:] and line.split(None, 1)[1] in commands]


def _cleanup(server: SSHServer) -> None:
    """Kill whatever this session left running remotely, so one failing test cannot break the next."""
    if server.processes():
        server.run(f"pkill -KILL -u {server.username} -x sleep; true")


def _detach(server: SSHServer, command: str) -> int:
    """Start ``command`` detached (own session and process group) and return its pid (= its PGID)."""
    # stdin/stdout/stderr must leave the SSH channel, else ssh waits for the command to finish.
    out = server.run(f"setsid nohup {command} </dev/null >/dev/null 2>&1 & echo $!", check=True, timeout=30)
    return int(out.stdout.strip())


def test_login_as_unprivileged_test_user(sshd_server: SSHServer) -> None:
    out = sshd_server.run("whoami; id -u; echo $HOME", check=True)
    user, uid, home = out.stdout.split()
    assert user == sshd_server.username == "conveyor-ssh"
    assert uid != "0"
    assert home == sshd_server.remote_home
    assert sshd_server.key_path.stat().st_mode & 0o077 == 0
    out = sshd_server.run(f"test -d {sshd_server.remote_dir} && test -w {sshd_server.remote_dir} && echo ok")
    assert out.stdout.strip() == "ok"


def test_host_key_is_verified(sshd_server: SSHServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = sshd_server.ssh_command("true", "-o", f"UserKnownHostsFile={empty}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 255
    assert "Host key verification failed" in out.stderr


def test_remote_python_imports_conveyor(sshd_server: SSHServer) -> None:
    import conveyor

    code = "import conveyor, sys; print(conveyor.__version__); print(conveyor.__file__)"
    out = sshd_server.run(f'{sshd_server.python} -c "{code}"', check=True)
    version, path = out.stdout.split()
    assert version == conveyor.__version__
    assert not path.startswith("/root")  # the test user cannot read there
    out = sshd_server.run(f'{sshd_server.python} -c "import numpy, pydantic, sqlalchemy, cloudpickle, alembic"')
    assert out.returncode == 0, out.stderr


def test_detached_command_survives_session_and_dies_by_group(sshd_server: SSHServer) -> None:
    try:
        pgid = _detach(sshd_server, "sh -c 'sleep 1001 & sleep 1002; wait'")
        # The ssh session that started it has closed; the whole group is (or is about to be) running.
        assert _wait_until(lambda: len(_running(sshd_server, "sleep 1001", "sleep 1002")) == 2), sshd_server.processes()
        assert sshd_server.run(f"ps -o pgid= -p {pgid}", check=True).stdout.strip() == str(pgid)
        sshd_server.run(f"kill -- -{pgid}", check=True)
        assert _wait_until(lambda: sshd_server.processes() == []), sshd_server.processes()
    finally:
        _cleanup(sshd_server)


def test_asyncssh_runs_a_command(sshd_server: SSHServer) -> None:
    asyncssh = _asyncssh()

    async def main() -> tuple[str, int]:
        async with asyncssh.connect(**sshd_server.connect_options()) as conn:
            result = await conn.run(f"{sshd_server.python} -c 'import conveyor; print(conveyor.__version__)'")
            return str(result.stdout), int(result.exit_status)

    stdout, status = asyncio.run(asyncio.wait_for(main(), 60))
    assert status == 0
    assert stdout.strip() == "0.1.0"


def test_asyncssh_signal_request_reaches_session_group(sshd_server: SSHServer) -> None:
    """sshd delivers an SSH `signal` request (non-root logins only) to the session's whole process group."""
    asyncssh = _asyncssh()
    both = ("sleep 1003", "sleep 1004")

    async def main() -> tuple[object, list[str]]:
        async with asyncssh.connect(**sshd_server.connect_options()) as conn:
            proc = await conn.create_process("sleep 1003 & sleep 1004; wait")
            for _ in range(200):
                if len(_running(sshd_server, *both)) == 2:
                    break
                await asyncio.sleep(0.05)
            running = _running(sshd_server, *both)
            proc.send_signal("TERM")
            result = await proc.wait()
            return result.exit_signal, running

    try:
        exit_signal, running = asyncio.run(asyncio.wait_for(main(), 60))
        assert len(running) == 2
        assert exit_signal is not None and exit_signal[0] == "TERM"
        assert _wait_until(lambda: sshd_server.processes() == []), sshd_server.processes()
    finally:
        _cleanup(sshd_server)


def test_dropped_connection_leaves_detached_process_running(sshd_server: SSHServer) -> None:
    asyncssh = _asyncssh()

    async def main() -> int:
        conn = await asyncssh.connect(**sshd_server.connect_options())
        # The channel stays open while the step runs (as a streaming operator would keep it).
        proc = await conn.create_process("setsid nohup sleep 1005 </dev/null >/dev/null 2>&1 & echo $!; wait")
        pid = int(await asyncio.wait_for(proc.stdout.readline(), 30))
        conn.abort()  # no SSH disconnect message, no channel close: the TCP connection just goes away
        await asyncio.sleep(0)
        return pid

    try:
        pid = asyncio.run(main())
        time.sleep(0.5)  # give sshd time to notice and tear the session down
        assert _wait_until(lambda: bool(_running(sshd_server, "sleep 1005"))), sshd_server.processes()
        # Re-attach from a new connection: the process is still there and can be killed by group.
        out = sshd_server.run(f"ps -o pgid=,args= -p {pid}", check=True)
        assert out.stdout.split() == [str(pid), "sleep", "1005"]
        sshd_server.run(f"kill -- -{pid}", check=True)
        assert _wait_until(lambda: not _running(sshd_server, "sleep 1005")), sshd_server.processes()
        # Without a pty sshd sends no SIGHUP: the `wait`ing login shell outlives the connection too.
        sshd_server.run(f"pkill -u {sshd_server.username} -f '^bash -c setsid nohup sleep 1005'; true")
        assert _wait_until(lambda: sshd_server.processes() == []), sshd_server.processes()
    finally:
        _cleanup(sshd_server)
