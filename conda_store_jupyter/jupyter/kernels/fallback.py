"""The fallback kernel: started instead of a kernel that cannot start, it answers every execution
with what went wrong and what to do (``$CONDA_STORE_KERNEL_ERROR``), as an error, so "Run All"
stops at the first cell.

``python -m conda_store_jupyter.jupyter.kernels.fallback -f <connection file>`` with the server's
own python: only pyzmq and jupyter_client's ``Session`` (signing, framing), both already there.
A real kernel's protocol subset: kernel_info, execute, is_complete, complete, inspect, history,
comm_info, interrupt, shutdown on shell and control; heartbeat echo; status on iopub.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any

import zmq
from jupyter_client.session import Session

ERROR_ENV = "CONDA_STORE_KERNEL_ERROR"
DEFAULT_ERROR = "This conda-store kernel could not start its environment."
PROTOCOL = "5.3"


class FallbackKernel:
    def __init__(self, connection: dict[str, Any], reason: str) -> None:
        self.reason = reason
        self.session = Session(key=connection["key"].encode(), signature_scheme=connection.get("signature_scheme", "hmac-sha256"))
        self.ctx = zmq.Context()
        transport, ip = connection.get("transport", "tcp"), connection["ip"]

        def bind(kind: int, port_name: str) -> zmq.Socket:
            sock = self.ctx.socket(kind)
            sock.linger = 100
            port = connection[port_name]
            sock.bind(f"{transport}://{ip}:{port}" if transport == "tcp" else f"{transport}://{ip}-{port}")
            return sock

        self.shell = bind(zmq.ROUTER, "shell_port")
        self.control = bind(zmq.ROUTER, "control_port")
        self.stdin = bind(zmq.ROUTER, "stdin_port")
        self.iopub = bind(zmq.PUB, "iopub_port")
        hb = bind(zmq.REP, "hb_port")
        threading.Thread(target=self._heartbeat, args=(hb,), daemon=True).start()
        self.execution_count = 0
        self.running = True

    @staticmethod
    def _heartbeat(sock: zmq.Socket) -> None:
        try:
            while True:
                sock.send(sock.recv())
        except zmq.ZMQError:
            return

    def publish(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> None:
        self.session.send(self.iopub, msg_type, content, parent=parent, ident=[f"kernel.fallback.{msg_type}".encode()])

    def kernel_info(self) -> dict[str, Any]:
        return {
            "status": "ok", "protocol_version": PROTOCOL, "implementation": "conda-store-fallback",
            "implementation_version": "1", "banner": self.reason,
            "language_info": {"name": "python", "version": "", "mimetype": "text/x-python", "file_extension": ".py"},
            "help_links": [],
        }

    def handle(self, sock: zmq.Socket, idents: list[bytes], msg: dict[str, Any]) -> None:
        msg_type = msg["header"]["msg_type"]
        self.publish("status", {"execution_state": "busy"}, msg)
        reply_type = msg_type.replace("_request", "_reply")
        content: dict[str, Any]
        if msg_type == "kernel_info_request":
            content = self.kernel_info()
        elif msg_type == "execute_request":
            self.execution_count += 1
            code = msg["content"].get("code", "")
            self.publish("execute_input", {"code": code, "execution_count": self.execution_count}, msg)
            error = {"ename": "KernelUnavailable", "evalue": self.reason,
                     "traceback": [f"\x1b[0;31mKernelUnavailable\x1b[0m: {self.reason}"]}
            if not msg["content"].get("silent"):
                self.publish("error", error, msg)
            content = {"status": "error", "execution_count": self.execution_count, **error}
        elif msg_type == "is_complete_request":
            content = {"status": "complete"}
        elif msg_type == "complete_request":
            pos = msg["content"].get("cursor_pos", 0)
            content = {"status": "ok", "matches": [], "cursor_start": pos, "cursor_end": pos, "metadata": {}}
        elif msg_type == "inspect_request":
            content = {"status": "ok", "found": False, "data": {}, "metadata": {}}
        elif msg_type == "history_request":
            content = {"status": "ok", "history": []}
        elif msg_type == "comm_info_request":
            content = {"status": "ok", "comms": {}}
        elif msg_type == "interrupt_request":
            content = {"status": "ok"}
        elif msg_type == "shutdown_request":
            content = {"status": "ok", "restart": bool(msg["content"].get("restart"))}
            self.running = False
        else:
            content = {"status": "error", "ename": "NotImplemented", "evalue": msg_type, "traceback": []}
        self.session.send(sock, reply_type, content, parent=msg, ident=idents)
        self.publish("status", {"execution_state": "idle"}, msg)

    def serve(self) -> None:
        self.publish("status", {"execution_state": "starting"}, {})
        poller = zmq.Poller()
        for sock in (self.shell, self.control, self.stdin):
            poller.register(sock, zmq.POLLIN)
        while self.running:
            for sock, _ in poller.poll(1000):
                idents, frames = self.session.feed_identities(sock.recv_multipart(copy=True), copy=True)
                try:
                    msg = self.session.deserialize(frames, content=True, copy=True)
                except ValueError:
                    continue  # a bad signature: not from our server; ignore as kernels do
                if sock is not self.stdin:
                    self.handle(sock, idents, msg)
        self.ctx.destroy(linger=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conda-store fallback kernel")
    parser.add_argument("-f", "--connection-file", required=True)
    args = parser.parse_args(argv)
    with open(args.connection_file, encoding="utf-8") as fh:
        connection = json.load(fh)
    FallbackKernel(connection, os.environ.get(ERROR_ENV) or DEFAULT_ERROR).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
