"""Ray for one driver run: connect to a cluster, or start an embedded one that only this run can join.

Ray is imported inside `ray_session`, not at the top: `cluster_environment` has to set what Ray reads when it is
first imported (its auth mode, whether it binds loopback) before anything imports Ray, so it imports no Ray.
"""

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def cluster_environment(address: str | None) -> Iterator[str | None]:
    """The cluster the run connects to: --address, else RAY_ADDRESS (Ray sets it for every job driver), else None
    for an embedded Ray, whose environment is set here for this process and every Ray process it starts.

    The embedded Ray listens on 127.0.0.1 only and asks for a fresh token, in a private directory that also holds
    Ray's session files and is removed after. RAY_AUTH_MODE=disabled in the user's environment turns the token off.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        yield address
        return
    private = Path(tempfile.mkdtemp(prefix="pdd-ray-"))  # 0700, under TMPDIR as Ray's own default /tmp/ray is
    settings = {
        "RAY_TMPDIR": str(private),  # Ray's sockets and session files too: this run's alone, and gone with it
        # Ray maps 127.0.0.1 to the machine's network address and listens there, except where it assumes a laptop
        # (this switch, off by default on Windows and macOS): then every port it opens is on loopback.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_TOKEN": None,  # it would win over the token file
    }
    if os.environ.get("RAY_AUTH_MODE", "token").lower() == "token":
        token = private / "auth_token"
        token.touch(mode=0o600)
        token.write_text(secrets.token_urlsafe(32))
        settings |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    saved = {name: os.environ.get(name) for name in settings}
    try:
        _set_environment(settings)
        yield None
    finally:
        _set_environment(saved)
        shutil.rmtree(private, ignore_errors=True)


def _set_environment(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to the cluster at address, or (None) start the embedded Ray that `cluster_environment` set up, and
    shut it down after."""
    import ray

    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", include_dashboard=False)  # never a running one
    try:
        yield
    finally:
        ray.shutdown()
