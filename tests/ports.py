"""Whether a port is free again, for tests of servers that must be gone."""

from __future__ import annotations

import socket


def nothing_listens(port: int) -> bool:
    """Whether a server could listen on ``port`` now, as uvicorn does: a connection's
    TIME_WAIT may linger there; only a listener counts."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
