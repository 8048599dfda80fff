"""A stand-in for the hospital's main application's health URL, on a free port."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class MainApp:
    """The hospital's main application's health URL: answers 200, 500, or hangs."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.release = threading.Event()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if app.mode == "hang":
                    app.release.wait(60)
                    return
                code = 200 if app.mode == "ok" else 500
                body = b'{"status": "ok"}' if code == 200 else b"database locked"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
