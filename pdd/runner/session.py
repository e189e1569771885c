"""Ray for one driver run: connect to a cluster, or start an embedded one on loopback and stop it after."""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to a cluster, or start an embedded Ray on loopback for this run and shut it down after."""
    if address:
        ray.init(address=address)
    else:
        # The embedded Ray lives for one run and is reached on 127.0.0.1, but Ray's gRPC ports listen on every
        # interface: on a machine others can reach, start pdd with RAY_AUTH_MODE=token (the token comes from
        # RAY_AUTH_TOKEN or ~/.ray/auth_token). Ray reads the mode when it is imported, so it is set there or not
        # at all; unset, Ray 2.60 would switch a new local cluster to token auth and write ~/.ray/auth_token.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False)  # never a running one
    try:
        yield
    finally:
        ray.shutdown()
