"""Who can join a Ray that pdd starts: the embedded Ray of `pdd sweep run` and the cluster of `cluster/local.sh`
listen on loopback and refuse a client without their token; the embedded one leaves nothing behind.

Each Ray here is a process tree started by the test; every PID seen in it is stopped by PID at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_runner import free_port, process_tree, still_running, write_sweep

from pdd.results import read_results

REPO = Path(__file__).resolve().parents[1]

# The embedded session as `pdd sweep run` starts it, held open until stdin closes.
SESSION = """\
import os, sys
from pdd.runner.session import cluster_environment, ray_session

with cluster_environment(None) as address, ray_session(address):
    import ray

    [node] = ray.nodes()
    print(ray.get_runtime_context().gcs_address, f"127.0.0.1:{node['NodeManagerPort']}",
          os.environ["RAY_AUTH_TOKEN_PATH"], flush=True)
    sys.stdin.readline()
"""


def grpc_status(address: str, token: str | None, server: str = "gcs") -> str:
    """How a Ray gRPC server (the GCS, or a raylet) answers a client that sends token, or none: OK or the refusal."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc, node_manager_pb2, node_manager_pb2_grpc

    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    with grpc.insecure_channel(address) as channel:
        try:
            if server == "gcs":
                gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetAllNodeInfo(
                    gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=30)
            else:
                node_manager_pb2_grpc.NodeManagerServiceStub(channel).GetNodeStats(
                    node_manager_pb2.GetNodeStatsRequest(), metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            return error.code().name
    return "OK"


def listening(pids: set[int]) -> set[str]:
    """The local addresses (host:port, IPv4-mapped IPv6 shown as IPv4) these processes listen on, from /proc."""
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                host, port = fields[1].split(":")
                raw = bytes.fromhex(host)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # per-word little endian
                ip = words[-4:] if table == "tcp" or words[:12] == bytes(10) + b"\xff\xff" else words
                found.add(f"{'.'.join(map(str, ip)) if len(ip) == 4 else ip.hex()}:{int(port, 16)}")
    return found


@pytest.fixture
def user_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A user's environment without Ray settings, with its own HOME and a short, private TMPDIR (Ray's socket
    paths under it must fit in 107 bytes)."""
    short = Path(tempfile.mkdtemp(prefix="pddauth-", dir="/tmp"))
    (tmp_path / "home").mkdir()
    yield {name: value for name, value in os.environ.items() if not name.startswith("RAY_")} | {
        "HOME": str(tmp_path / "home"), "TMPDIR": str(short), "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    shutil.rmtree(short, ignore_errors=True)  # the tests say whether anything was left; this only tidies up


def stop_all(seen: set[tuple[int, str]]) -> None:
    for pid, started in seen:
        if still_running(pid, started):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.ray
def test_the_embedded_ray_listens_on_loopback_and_refuses_a_client_without_its_token(user_env, tmp_path):
    log = tmp_path / "session.log"
    session = subprocess.Popen([sys.executable, "-c", SESSION], env=user_env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    seen: set[tuple[int, str]] = set()
    try:
        gcs, raylet, token_path = session.stdout.readline().split()
        seen |= set(process_tree(session.pid))
        token = Path(token_path)
        assert token.parent.parent == Path(user_env["TMPDIR"]) and token.stat().st_mode & 0o077 == 0, \
            "the token is in a private directory, readable by this user only"
        assert gcs.startswith("127.0.0.1:")
        addresses = listening({pid for pid, _ in seen})
        assert gcs in addresses and len(addresses) > 3, addresses
        assert all(address.startswith("127.0.0.1:") for address in addresses), addresses

        assert grpc_status(gcs, None) == "UNAUTHENTICATED"
        assert grpc_status(gcs, "a" * 43) == "UNAUTHENTICATED"
        assert grpc_status(gcs, token.read_text().strip()) == "OK"
        assert grpc_status(raylet, None, "raylet") == "UNAUTHENTICATED"
        assert grpc_status(raylet, token.read_text().strip(), "raylet") == "OK"

        session.stdin.close()
        assert session.wait(timeout=120) == 0, log.read_text()[-3000:]
        assert not any(still_running(*process) for process in seen), "a Ray process outlived the session"
        assert list(Path(user_env["TMPDIR"]).glob("pdd-ray-*")) == [], "the token and Ray's session files are gone"
        assert not (Path(user_env["HOME"]) / ".ray").exists(), "~/.ray/auth_token is neither read nor written"
    finally:
        session.kill()
        stop_all(seen)


@pytest.mark.ray
def test_an_embedded_sweep_leaves_no_ray_process_token_or_file_behind(user_env, cifar_slice, tmp_path):
    body = "grid:\n  - {ipc: [1], pipc: [10]}\nmethods:\n  random: {method: random}\nsearch: {trials: 1}\n" \
           "confirm: {subset_seeds: [0]}\n"
    file = write_sweep(tmp_path / "alone.yaml", "alone", body, cifar_slice)
    file.write_text(file.read_text().replace("gpu: 0.5", "gpu: 0"))  # this machine has no GPU, logical or real
    log = tmp_path / "driver.log"
    driver = subprocess.Popen([sys.executable, "-m", "pdd", "sweep", "run", str(file), "--storage", str(tmp_path)],
                              env=user_env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    seen: set[tuple[int, str]] = set()
    try:
        while driver.poll() is None:  # Ray's processes are the driver's descendants while it runs
            seen |= set(process_tree(driver.pid))
            time.sleep(0.2)
        assert driver.returncode == 0, log.read_text()[-3000:]
        assert len(seen) > 5, "the tree was seen with Ray's processes in it"
        assert not any(still_running(*process) for process in seen), "a Ray process outlived the run"
        assert list(Path(user_env["TMPDIR"]).glob("pdd-ray-*")) == []
        assert not (Path(user_env["HOME"]) / ".ray").exists()
        assert [row["status"] for row in read_results(tmp_path / "alone").to_pylist()] == ["ok"]
    finally:
        driver.kill()
        stop_all(seen)


@pytest.mark.ray
def test_the_local_cluster_refuses_a_client_without_its_token(tmp_path):
    state = Path(tempfile.mkdtemp(prefix="pddlc-", dir="/tmp"))
    gcs_port, dashboard_port = free_port(), free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_")} | {
        "PDD_CLUSTER_DIR": str(state), "GCS_PORT": str(gcs_port), "DASHBOARD_PORT": str(dashboard_port),
        "VENV_BIN": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    script = REPO / "cluster" / "local.sh"
    seen: set[tuple[int, str]] = set()
    try:
        started = subprocess.run([str(script), "start", "0"], env=env, capture_output=True, text=True, timeout=300)
        for line in (state / "pids").read_text().splitlines():
            seen |= set(process_tree(int(line.split()[0])))
        assert started.returncode == 0, started.stderr[-3000:]
        token = (state / "auth_token").read_text().strip()
        gcs = f"127.0.0.1:{gcs_port}"
        assert grpc_status(gcs, None) == "UNAUTHENTICATED"
        assert grpc_status(gcs, token) == "OK"

        jobs = f"http://127.0.0.1:{dashboard_port}/api/jobs/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(jobs, timeout=30)
        assert refused.value.code in (401, 403)
        with urllib.request.urlopen(urllib.request.Request(jobs, headers={"Authorization": f"Bearer {token}"}),
                                    timeout=30) as accepted:
            assert accepted.status == 200

        stopped = subprocess.run([str(script), "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert not any(still_running(*process) for process in seen), "a node's process outlived `local.sh stop`"
    finally:
        stop_all(seen)
        shutil.rmtree(state, ignore_errors=True)
