"""A pool of four ports: each test listens on a port of its own."""

import json
import socket
import time

import pytest


@pytest.mark.resource("port-pool", slots=1)
@pytest.mark.parametrize("client", range(4))
def test_server(port, client, server_config):
    with open(server_config) as f:
        backlog = json.load(f)["backlog"]
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(backlog)
        time.sleep(0.2)


@pytest.mark.serial
def test_restart_everything():
    """Runs alone: no other test at the same time."""
    time.sleep(0.3)
