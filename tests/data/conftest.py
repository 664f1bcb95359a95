"""The data tests never reach the internet: a connection to anything but the loopback address fails the test."""

import socket

import pytest

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    real = socket.socket.connect

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in LOOPBACK:
            raise AssertionError(f"a test tried to connect to {address!r}: the data tests must stay on 127.0.0.1")
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
