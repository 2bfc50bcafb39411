"""Runs the Phoenix server (`phoenix serve`) for the tests, on loopback only.

Phoenix binds its HTTP listener (UI, REST API, OTLP/HTTP at /v1/traces) to PHOENIX_HOST,
but its OTLP/gRPC listener always to every interface ("[::]:PHOENIX_GRPC_PORT", in
phoenix/server/grpc_server.py) with no setting to change that. A test must not listen
beyond loopback, so this puts the gRPC listener on PHOENIX_HOST too, then starts Phoenix as
its own `arize-phoenix serve` would. Everything else is configured by the PHOENIX_*
environment variables the caller sets (tests/phoenix_support/mod.rs). With
PHOENIX_TEST_EXIT_ON_STDIN_EOF=1 it exits when its stdin closes: the test holds the other
end, so Phoenix never outlives a test process that died without killing it.
"""

import os
import sys
import threading

import grpc.aio._server as _grpc_server

_host = os.environ.get("PHOENIX_HOST", "127.0.0.1")
_add_insecure_port = _grpc_server.Server.add_insecure_port


def _loopback_only(self, address):
    if address.startswith("[::]:"):
        address = f"{_host}:{address[len('[::]:'):]}"
    return _add_insecure_port(self, address)


_grpc_server.Server.add_insecure_port = _loopback_only


def _exit_when_stdin_closes():
    # The test holds our stdin's other end: if the test process dies without killing us
    # (a panic that skipped Drop, a killed `cargo test`), we go too.
    sys.stdin.buffer.read()
    os._exit(0)


if __name__ == "__main__":
    if os.environ.get("PHOENIX_TEST_EXIT_ON_STDIN_EOF") == "1":
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()

    from phoenix.server.main import main

    sys.argv = ["phoenix", "serve"]
    sys.exit(main())
