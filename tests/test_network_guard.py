"""The suite's own guard: no test may reach beyond loopback (see conftest.loopback_only)."""

import socket

import pytest
from conftest import NonLoopbackTraffic


def test_connections_beyond_loopback_are_refused():
    with pytest.raises(NonLoopbackTraffic), socket.socket() as sock:
        sock.connect(("10.1.2.3", 80))


def test_name_lookups_beyond_loopback_are_refused():
    with pytest.raises(NonLoopbackTraffic):
        socket.getaddrinfo("huggingface.co", 443)


def test_loopback_is_allowed():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
