"""Free TCP ports on the loopback interface, so that clusters can run side by side."""

from __future__ import annotations

import socket
from contextlib import ExitStack

from .names import HOST


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports nobody listens on right now.

    The sockets stay open until all ports are picked, so the same port is never handed out
    twice; a port may still be taken between now and the moment a program binds it, which
    shows up as that program failing to start with its log saying so.
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports
