"""A loopback TCP proxy that can be cut and restored (an endpoint outage), or pointed
elsewhere (a device relaying traffic to a real server)."""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, port: int):
        assert upstream_host in ("127.0.0.1", "localhost")
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self._lsock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        # Connections accepted so far.
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._lsock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return self

    def stop(self):
        """Refuses new connections and cuts every open one."""
        with self._lock:
            if self._lsock:
                self._lsock.close()
                self._lsock = None
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, lsock: socket.socket):
        while True:
            try:
                client, _ = lsock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                up = socket.create_connection(self.upstream, timeout=5)
                up.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._lsock is not lsock:
                    client.close()
                    up.close()
                    return
                self._conns += [client, up]
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
