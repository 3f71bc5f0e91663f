"""`thinksound serve`: a read-only HTTP server over a local artifact folder, on 127.0.0.1.

Browsers refuse file:// links from a web page (the Prefect UI), so a report can link outputs here
instead (`thinksound run --artifact-base-url http://127.0.0.1:PORT/`).
"""

from __future__ import annotations

import functools
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.1"


class ReadOnlyArtifactHandler(SimpleHTTPRequestHandler):
    """GET and HEAD of files under the served folder; nothing else, and nothing outside it."""

    def send_head(self):  # noqa: ANN201 - the base class's signature
        root = os.path.realpath(self.directory)
        target = os.path.realpath(self.translate_path(self.path))
        # A link inside the folder must not lead outside it.
        if os.path.commonpath([target, root]) != root:
            self.send_error(404, "File not found")
            return None
        return super().send_head()


def artifact_server(root: Path, port: int) -> ThreadingHTTPServer:
    """An HTTP server bound to 127.0.0.1:`port` (0 picks a free port); call `serve_forever()`."""
    handler = functools.partial(ReadOnlyArtifactHandler, directory=str(Path(root).resolve()))
    return ThreadingHTTPServer((HOST, port), handler)
