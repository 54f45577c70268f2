#!/usr/bin/env python3
"""Serves www/ on 127.0.0.1: a plain static server, as any static host would be.

    scripts/serve.py [--port N]     (default 8080; 0 picks a free port)

Prints the URL to open once the socket is listening.
"""
import argparse
import functools
import http.server
import sys
from pathlib import Path

WWW = Path(__file__).resolve().parent.parent / "www"


class Handler(http.server.SimpleHTTPRequestHandler):
    # Browsers compile .wasm in streaming mode only when it is served as application/wasm.
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".json": "application/json",
    }

    def end_headers(self):
        # Development server: always revalidate, so a rebuilt package is picked up on reload.
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, fmt, *args):
        sys.stderr.write("[serve] " + (fmt % args) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    handler = functools.partial(Handler, directory=str(WWW))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    except OSError as e:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror}. Pick another port: PORT=8081 scripts/run.sh")
    port = server.server_address[1]
    print(f"sd-webgpu is ready: open http://127.0.0.1:{port}/ in a browser with WebGPU (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
