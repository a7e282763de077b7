"""The Redis online store from our side: its address, a reachability check before anything is
written, a plain message when it is down, and a throw-away server for tests and benchmarks."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager

from .errors import GuimError


def redis_address(connection_string: str) -> tuple[str, int, dict]:
    """(host, port, client keyword arguments) of a Feast Redis connection string
    ``host:port[,key=value...]`` (the format of Feast's ``connection_string``; values are read as
    JSON where they parse, e.g. ``db=1``, ``ssl=true``)."""
    parts = connection_string.split(",")
    nodes = [p for p in parts if "=" not in p]
    host, _, port = nodes[0].rpartition(":") if nodes else ("", "", "")
    if not host or not port.isdigit():
        raise GuimError(f"publish.redis={connection_string!r}: expected host:port[,db=N][,password=...]")
    params = {}
    for p in parts:
        if "=" in p:
            key, value = p.split("=", 1)
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
    return host, int(port), params


def check_reachable(cfg) -> None:
    """Raise a clear GuimError when ``cfg.publish`` names a Redis online store that does not answer a
    PING (a SQLite store is a file in the workspace: nothing to check)."""
    if cfg.publish.online_store != "redis":
        return
    import redis

    conn = cfg.publish.redis
    host, port, params = redis_address(conn)
    try:
        redis.Redis(host=host, port=port, socket_connect_timeout=5, socket_timeout=5, **params).ping()
    except Exception as e:
        err = redis_error(conn, e)
        raise (err if isinstance(err, GuimError) else GuimError(f"Redis online store at {conn}: {e}")) from None


def redis_error(connection_string: str, e: Exception) -> Exception:
    """A plain message when Redis cannot be reached; other errors pass through unchanged."""
    import redis

    if isinstance(e, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError)):
        return GuimError(f"Redis online store at {connection_string} is not reachable ({e}). Start redis-server "
                         "there, or set publish.redis=host:port, or use --set publish.online_store=sqlite")
    return e


@contextmanager
def redis_server(port: int = 0):
    """A throw-away ``redis-server`` on loopback (no persistence) for tests and benchmarks; yields host:port."""
    import shutil
    import socket
    import subprocess

    import redis

    if shutil.which("redis-server") is None:
        raise GuimError("redis-server not found: apt-get install redis-server")
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        else:
            raise GuimError(f"redis-server did not start on port {port}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
