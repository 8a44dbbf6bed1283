"""Fetch one folder of one commit from a git repository, shallowly and safely.

Credentials never reach git's argv (where `ps` and logs would show them): they
go in through GIT_CONFIG_* environment variables as an `http.<url>.extraHeader`
scoped to the repository's origin. Every git failure becomes one readable line
with the URL redacted and any secret scrubbed.
"""

from __future__ import annotations

import base64
import contextlib
import os
import posixpath
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from codemode_session.errors import CodemodeError, NotFoundError, ValidationError

DEFAULT_TIMEOUT = 120.0
MAX_FILE_BYTES = 4 * 1024 * 1024  # per source file; a workflow's own limit is lower
_REF_RE = re.compile(r"^[A-Za-z0-9._/@+-]{1,255}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{4,64}$")


REGULAR_MODES = ("100644", "100755")
SYMLINK_MODE = "120000"


class GitError(CodemodeError):
    """A git operation failed; the message is one line, safe to show and log."""


class GitAuthError(GitError):
    """The server refused our credentials (or asked for some we do not have)."""


TOKEN_USERNAME = "x-access-token"


@dataclass(frozen=True)
class GitAuth:
    """HTTP credentials: a token, or a username and password.

    A token goes as the basic-auth password by default (GitHub, GitLab, Gitea and
    most forges accept any user name with it), or as `Authorization: Bearer` with
    `token_scheme="bearer"` (e.g. Azure DevOps with Entra tokens, Bitbucket).
    """

    token: str | None = None
    username: str | None = None
    password: str | None = None
    token_scheme: str = "basic"

    def header(self) -> str | None:
        if self.token and self.token_scheme == "bearer":
            return f"Authorization: Bearer {self.token}"
        password = self.token or self.password
        if password is None:
            return None
        raw = f"{self.username or TOKEN_USERNAME}:{password}".encode()
        return f"Authorization: Basic {base64.b64encode(raw).decode()}"

    def secrets(self) -> list[str]:
        """Strings that must never appear in a message we print."""
        found = [s for s in (self.token, self.password) if s]
        header = self.header()
        if header:
            found.append(header.split(" ", 2)[-1])
        return found


@dataclass(frozen=True)
class GitTree:
    """The files of one folder (not recursive) at one commit."""

    commit: str
    files: dict[str, bytes] = field(default_factory=dict)


def redact_url(url: str) -> str:
    """The URL without userinfo, query or fragment, for messages."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def normalize_url(url: str) -> str:
    """Accept file://, http(s):// and local paths; refuse everything else.

    Other transports (ssh, git://, ext::) are refused: a bootstrap Job has no
    keys for them, and `ext::` would run arbitrary commands.
    """
    if not url or url.startswith("-"):
        raise ValidationError(f"invalid git URL {url!r}")
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ValidationError(f"invalid git URL {redact_url(url)!r}: no host")
        if parts.password is not None:
            raise ValidationError(
                "git URL must not embed a password: use --token-file, --password-file, "
                "--token-env or --password-env"
            )
        return url
    if parts.scheme == "file":
        return url
    if "://" in url or url.startswith("ext::") or re.match(r"^[\w.-]+@[\w.-]+:", url):
        raise ValidationError(
            f"unsupported git URL {redact_url(url)!r}: use http(s)://, file:// or a local path"
        )
    path = Path(url).expanduser().resolve()
    if not path.exists():
        raise GitError(f"git repository not found: {url} does not exist")
    return str(path)


def validate_ref(ref: str) -> str:
    if not _REF_RE.match(ref) or ref.startswith("-") or ".." in ref or ref.endswith(".lock"):
        raise ValidationError(f"invalid git ref {ref!r}")
    return ref


def validate_subpath(path: str) -> str:
    """A folder inside the repository, as git wants it: relative, no `..`."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValidationError(f"invalid path {path!r}: must stay inside the repository")
    return "/".join(parts)


def _run(
    argv: list[str], stdin: bytes | None, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """subprocess.run, but a timeout kills git's whole process group (remote helpers too)."""
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


class _Git:
    """Runs git in one scratch repository with a shared deadline and scrubbed errors."""

    def __init__(self, gitdir: Path, url: str, auth: GitAuth, timeout: float) -> None:
        self.gitdir = gitdir
        self.url = url
        self.shown_url = redact_url(url)
        self.auth = auth
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.env = self._env()

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("GIT_") and k not in ("SSH_ASKPASS",)
        }
        env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="", GCM_INTERACTIVE="never")
        config = [
            ("credential.helper", ""),
            ("core.hooksPath", os.devnull),
            # Only the transports we accept, also across redirects and alternates.
            ("protocol.allow", "never"),
            ("protocol.file.allow", "always"),
            ("protocol.http.allow", "always"),
            ("protocol.https.allow", "always"),
            # Reading a local repository owned by another uid (a mounted volume).
            ("safe.directory", "*"),
        ]
        header = self.auth.header()
        if header and urlsplit(self.url).scheme in ("http", "https"):
            origin = urlsplit(self.url)
            scope = urlunsplit((origin.scheme, origin.netloc, "/", "", ""))
            config.append((f"http.{scope}.extraHeader", header))
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return env

    def scrub(self, text: str) -> str:
        for secret in self.auth.secrets():
            text = text.replace(secret, "***")
        if self.url != self.shown_url:
            text = text.replace(self.url, self.shown_url)
        return re.sub(r"(https?://)[^/@\s]+@", r"\1", text)

    def run(
        self, *args: str, stdin: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise GitError(f"git timed out after {self.timeout:g}s on {self.shown_url}")
        try:
            proc = _run(["git", f"--git-dir={self.gitdir}", *args], stdin, self.env, remaining)
        except subprocess.TimeoutExpired:
            raise GitError(f"git timed out after {self.timeout:g}s on {self.shown_url}") from None
        except FileNotFoundError:
            raise GitError("git is not installed (it is needed for git sources)") from None
        if check and proc.returncode != 0:
            raise self.error(proc.stderr, "git " + args[0])
        return proc

    def last_line(self, stderr: bytes) -> str:
        lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
        picked = [ln for ln in lines if ln.startswith(("fatal:", "error:"))] or lines or ["?"]
        line = picked[-1]
        for tag in ("fatal: ", "error: "):
            line = line.removeprefix(tag)
        return self.scrub(line)[:300]

    def error(self, stderr: bytes, what: str) -> GitError:
        """Classify git's stderr into one line a user can act on."""
        low = stderr.decode(errors="replace").lower()
        url = self.shown_url
        # HTTP statuses only as git reports them: a bare "401" also matches a URL's port
        # (127.0.0.1:40177), which made a missing repository an authentication failure.
        status = {int(code) for code in re.findall(r"(?:returned error|http)[: ]+(\d{3})\b", low)}
        if any(
            s in low
            for s in (
                "authentication failed",
                "could not read username",
                "could not read password",
                "403 forbidden",
            )
        ) or status & {401, 403}:
            return GitAuthError(f"git authentication failed for {url} (check the credentials)")
        if (
            any(
                s in low
                for s in (
                    "not found",
                    "does not appear to be a git repository",
                    "no such file or directory",
                )
            )
            or 404 in status
        ) and ("remote ref" not in low):
            return GitError(f"git repository not found: {url}")
        if any(
            s in low
            for s in (
                "could not resolve host",
                "failed to connect",
                "connection refused",
                "couldn't connect",
                "timed out",
                "ssl",
                "certificate",
            )
        ):
            return GitError(f"cannot reach git repository {url}: {self.last_line(stderr)}")
        return GitError(f"{what} failed for {url}: {self.last_line(stderr)}")


def _missing_ref(stderr: bytes) -> bool:
    low = stderr.decode(errors="replace").lower()
    return any(
        s in low
        for s in (
            "couldn't find remote ref",
            "not our ref",
            "unadvertised object",
            "no such remote ref",
            "invalid refspec",
            "remote error: upload-pack",
        )
    )


def _fetch_commit(git: _Git, ref: str) -> str:
    """Fetch `ref` (branch, tag, full or short sha) at depth 1 where possible."""
    proc = git.run("fetch", "--quiet", "--no-tags", "--depth", "1", "--", git.url, ref, check=False)
    if proc.returncode == 0:
        out = git.run("rev-parse", "--verify", "FETCH_HEAD^{commit}").stdout
        return out.decode().strip()
    if not _missing_ref(proc.stderr):
        raise git.error(proc.stderr, "git fetch")
    if not _HEX_RE.match(ref):
        raise NotFoundError(f"git ref {ref!r} not found in {git.shown_url}")
    # A (short) commit sha the server will not serve directly: fetch everything
    # reachable, then resolve it locally.
    git.run(
        "fetch",
        "--quiet",
        "--",
        git.url,
        "+refs/heads/*:refs/remotes/origin/*",
        "+refs/tags/*:refs/tags/*",
    )
    found = git.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if found.returncode != 0:
        raise NotFoundError(f"git ref {ref!r} not found in {git.shown_url}")
    return found.stdout.decode().strip()


def _keep_all(name: str) -> bool:
    return True


def check_utf8_name(name: str) -> None:
    """File names become workflow and tool names: refuse bytes that are not UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise ValidationError(f"{shown}: file name is not UTF-8") from None


def _read_folder(
    git: _Git, commit: str, subpath: str, wanted: Callable[[str], bool] = _keep_all
) -> dict[str, bytes]:
    """Read the regular files directly in `subpath` that `wanted` accepts, via one
    `cat-file --batch`. A symlink to a regular file of the repository reads as that
    file; one that leaves the repository is refused; submodules are skipped."""
    spec = f"{commit}:{subpath}" if subpath else f"{commit}^{{tree}}"
    kind = git.run("cat-file", "-t", spec, check=False)
    if kind.returncode != 0:
        raise NotFoundError(f"path {subpath!r} not found at {commit[:12]} in {git.shown_url}")
    kind_name = kind.stdout.decode().strip()
    if kind_name == "blob":  # --path names a single file (e.g. requirements.txt)
        name = subpath.rsplit("/", 1)[-1]
        size = int(git.run("cat-file", "-s", spec).stdout.decode().strip() or 0)
        entries = [(spec, name, size)] if wanted(name) else []
    elif kind_name == "tree":
        listing = git.run("ls-tree", "-z", "-l", spec).stdout.decode(errors="surrogateescape")
        entries, links = [], []
        for row in filter(None, listing.split("\0")):
            meta, name = row.split("\t", 1)
            mode, otype, oid, size_text = meta.split()
            if otype == "blob" and mode in REGULAR_MODES and wanted(name):
                check_utf8_name(name)
                entries.append((oid, name, int(size_text)))
            elif otype == "blob" and mode == SYMLINK_MODE and wanted(name):
                check_utf8_name(name)
                links.append((oid, name))
        entries += _link_targets(git, commit, subpath, links)
    else:
        raise GitError(f"path {subpath!r} at {commit[:12]} is a {kind_name}, not a folder")
    for _, name, size in entries:
        if size > MAX_FILE_BYTES:
            raise ValidationError(f"{name}: larger than {MAX_FILE_BYTES} bytes")
    blobs = _cat_blobs(git, commit, [(oid, name) for oid, name, _ in entries])
    return {name: blob for (_, name, _), blob in zip(entries, blobs, strict=True)}


def _cat_blobs(git: _Git, commit: str, objects: list[tuple[str, str]]) -> list[bytes]:
    """The contents of (object id, file name) pairs, in order, via one `cat-file --batch`."""
    if not objects:
        return []
    batch = git.run("cat-file", "--batch", stdin="".join(f"{o}\n" for o, _ in objects).encode())
    out, pos, blobs = batch.stdout, 0, []
    for _, name in objects:
        nl = out.index(b"\n", pos)
        header = out[pos:nl].split()
        if len(header) != 3:  # "<oid> missing": a partial clone without the blob
            raise GitError(f"cannot read {name} at {commit[:12]}: object missing")
        size = int(header[2])
        blobs.append(out[nl + 1 : nl + 1 + size])
        pos = nl + 1 + size + 1
    return blobs


def _link_targets(
    git: _Git, commit: str, subpath: str, links: list[tuple[str, str]]
) -> list[tuple[str, str, int]]:
    """(object id, link name, size) of the regular files that in-repository symlinks
    point at. A link out of the repository is refused; a dangling one, or one to a
    folder or another link, is skipped (as in a folder source)."""
    found = []
    for (_, name), raw in zip(links, _cat_blobs(git, commit, links), strict=True):
        target = raw.decode("utf-8", "surrogateescape")
        resolved = posixpath.normpath(posixpath.join(subpath.strip("/"), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            raise ValidationError(f"{name}: symlink points outside the repository ({target})")
        row = git.run("ls-tree", "-z", "-l", commit, "--", resolved).stdout
        meta = row.decode(errors="surrogateescape").split("\t", 1)[0].split()
        if len(meta) == 4 and meta[1] == "blob" and meta[0] in REGULAR_MODES:
            found.append((meta[2], name, int(meta[3])))
    return found


def _local_repo(url: str) -> Path | None:
    """The filesystem path of a file:// URL or local path; None for http(s)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parts.path))
    return Path(url)


def _read_local(
    repo: Path,
    url: str,
    ref: str,
    subpath: str,
    timeout: float,
    wanted: Callable[[str], bool] = _keep_all,
) -> GitTree:
    """Read a repository on this machine in place: no transport, pack or copy needed."""
    probe = _Git(repo, url, GitAuth(), timeout)
    found = _run(
        ["git", "-C", str(repo), "rev-parse", "--absolute-git-dir"], None, probe.env, timeout
    )
    gitdir = Path(found.stdout.decode().strip())
    # Like a fetch would, refuse a folder that is merely inside a repository.
    if found.returncode != 0 or not (gitdir == repo.resolve() or (repo / ".git").exists()):
        raise GitError(f"git repository not found: {url} is not a git repository")
    git = _Git(gitdir, url, GitAuth(), timeout)
    resolved = git.run(
        "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False
    )
    if resolved.returncode != 0:
        raise NotFoundError(f"git ref {ref!r} not found in {url}")
    commit = resolved.stdout.decode().strip()
    return GitTree(commit=commit, files=_read_folder(git, commit, subpath, wanted))


def fetch_folder(
    url: str,
    ref: str | None = None,
    path: str = "",
    auth: GitAuth | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    local_in_place: bool = True,
    wanted: Callable[[str], bool] = _keep_all,
) -> GitTree:
    """The commit `ref` resolves to (default: HEAD) and the files directly in `path`.

    Remote repositories are fetched at depth 1 into a temporary bare repository;
    local ones (file:// or a path) are read in place unless `local_in_place` is off.
    """
    url = normalize_url(url)
    subpath = validate_subpath(path)
    if not ref:
        try:
            return _fetch_folder(url, "HEAD", subpath, auth, timeout, local_in_place, wanted)
        except NotFoundError as exc:
            if "git ref 'HEAD'" not in str(exc):
                raise
            raise NotFoundError(
                f"{redact_url(url)} has no commit on its default branch (HEAD): "
                "the repository is empty or HEAD names a missing branch; pass --ref"
            ) from None
    return _fetch_folder(url, validate_ref(ref), subpath, auth, timeout, local_in_place, wanted)


def _fetch_folder(
    url: str,
    ref: str,
    subpath: str,
    auth: GitAuth | None,
    timeout: float,
    local_in_place: bool,
    wanted: Callable[[str], bool],
) -> GitTree:
    local = _local_repo(url)
    if local is not None and local_in_place:
        return _read_local(local, url, ref, subpath, timeout, wanted)
    with tempfile.TemporaryDirectory(prefix="codemode-git-") as tmp:
        git = _Git(Path(tmp) / "repo.git", url, auth or GitAuth(), timeout)
        init = _run(["git", "init", "--quiet", "--bare", str(git.gitdir)], None, git.env, 30)
        if init.returncode != 0:
            raise GitError(f"git init failed: {git.last_line(init.stderr)}")
        commit = _fetch_commit(git, ref)
        return GitTree(commit=commit, files=_read_folder(git, commit, subpath, wanted))
