"""Git test helpers: a scratch repository, and a local smart-HTTP git server.

The server is `git http-backend` behind Basic/Bearer auth, in a thread on
127.0.0.1 and a free port, serving every repository under `root` (so
`http://127.0.0.1:PORT/repo.git`). Requests without valid credentials get 401
like a real forge; `requests` records what was asked.
"""

from __future__ import annotations

import base64
import hmac
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}

WORKFLOW = '''"""{doc}"""


async def run(x: int = {n}) -> int:
    return x + {n}
'''


def workflow_source(n: int, doc: str | None = None) -> str:
    return WORKFLOW.format(doc=doc or f"Workflow {n}.", n=n)


class GitRepo:
    """A non-bare repository on disk that tests write files into and commit."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", branch)

    def git(self, *args: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(self.path), *args],
            capture_output=True,
            env={**os.environ, **GIT_ENV},
            check=True,
        )
        return proc.stdout.decode().strip()

    def write(self, files: dict[str, str | None], sub: str = "") -> None:
        """Write (or, for None, delete) files under `sub`."""
        folder = self.path / sub
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            if text is None:
                (folder / name).unlink()
            else:
                (folder / name).write_text(text)

    def commit(self, message: str = "change") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def bare_copy(self, dest: Path) -> Path:
        """A bare clone to serve over HTTP."""
        subprocess.run(
            ["git", "clone", "-q", "--bare", str(self.path), str(dest)],
            check=True,
            capture_output=True,
            env={**os.environ, **GIT_ENV},
        )
        return dest

    @property
    def url(self) -> str:
        return self.path.as_uri()


class GitHTTPServer:
    def __init__(
        self,
        root: Path,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.root = root
        self.host = host
        self.token = token
        self.username = username
        self.password = password
        self.requests: list[tuple[str, str, bool]] = []  # method, path, authorized
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                ok = server.authorized(self.headers.get("Authorization"))
                server.requests.append((self.command, self.path, ok))
                body = self._body()
                if not ok:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._cgi(body)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _cgi(self, body: bytes) -> None:
                path, _, query = self.path.partition("?")
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_ADDR": "127.0.0.1",
                    "REMOTE_USER": "test",
                }
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                if self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                proc = subprocess.run(
                    ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
                )
                head, _, payload = proc.stdout.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = proc.stdout.partition(b"\n\n")
                status = 200
                headers = []
                for line in head.decode(errors="replace").splitlines():
                    key, _, value = line.partition(":")
                    if key.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif key:
                        headers.append((key.strip(), value.strip()))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def authorized(self, header: str | None) -> bool:
        if self.token is None and self.username is None:
            return True
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and self.token is not None:
            return hmac.compare_digest(value.strip(), self.token)
        if scheme.lower() == "basic":
            try:
                user, _, pw = base64.b64decode(value.strip()).decode().partition(":")
            except ValueError:
                return False
            if self.password is not None and user == self.username:
                return hmac.compare_digest(pw, self.password)
            # Like forges: a token is accepted as the password with any user name.
            return self.token is not None and bool(user) and hmac.compare_digest(pw, self.token)
        return False

    def url(self, repo: str) -> str:
        return f"http://{self.host}:{self.port}/{repo}"

    def __enter__(self) -> GitHTTPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    """Serve a folder of repositories until killed: `python -m tests.integration.gitserver`."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="a local smart-HTTP git server")
    parser.add_argument("root", type=Path, help="folder of bare repositories")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port-file", type=Path, help="write the chosen port here")
    args = parser.parse_args()
    server = GitHTTPServer(args.root, host=args.host)
    if args.port_file:
        args.port_file.write_text(f"{server.port}\n")
    signal.signal(signal.SIGTERM, lambda *_: server.httpd.shutdown())
    server.httpd.serve_forever()


if __name__ == "__main__":
    main()


def folder(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    """A plain folder source (`--folder`) holding `files`."""
    path = tmp_path / name
    path.mkdir()
    for filename, text in files.items():
        (path / filename).write_text(text)
    return path
