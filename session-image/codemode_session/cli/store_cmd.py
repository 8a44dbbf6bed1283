"""`codemode store bootstrap|pull|diff|list`: move workflows, tools and deps
between folders, git repositories and storage (Redis or a FileStorage dir).

Secrets for git are read from files or environment variables only, so they
never show up in `ps`, shell history or a Job spec. Every failure is a
`CodemodeError`, which `cli.main` prints as one line and exits 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from codemode_session.errors import CodemodeError, ValidationError
from codemode_session.names import validate_library_name
from codemode_session.storage import Storage
from codemode_session.store.bootstrap import (
    SyncResult,
    bootstrap_workflows,
    sync_deps,
    sync_tools,
    unpublish_library,
)
from codemode_session.store.catalog import KINDS, Catalog, Kind, build_catalog, relevant
from codemode_session.store.diff import diff_catalog
from codemode_session.store.gitfetch import DEFAULT_TIMEOUT, GitAuth
from codemode_session.store.pull import list_entries, pull_to_folder
from codemode_session.store.sources import SourceSpec, load_snapshot
from codemode_session.store.target import TargetSpec, open_storage

T = TypeVar("T")

EPILOG = """\
Sources are the files directly inside one folder: workflows are NAME.py (the
module docstring is the description), tools NAME.yaml, deps requirements.txt.
Git credentials come only from files or environment variables: a token
(--token-file/--token-env) or --username with --password-file/--password-env.

Ownership: bootstrap records that --library owns what it publishes. Pruning
removes only workflows that library owns; agent-created workflows are never
touched. A source file named like a workflow an agent created, or like one
another library owns, is a conflict: the bootstrap fails and writes nothing
(--adopt takes over same-named agent-created workflows instead; the result
counts them as updated and adopted).

Symlinks are followed while they stay inside the --folder or the git
repository; one that leads outside is refused, a dangling one is skipped.

py-code-mode's forms are accepted too: --source PATH (a folder, or for deps a
requirements file), --target URL (redis://, rediss:// or unix://), pull --dest
DIR, --type skills (= workflows), bootstrap --clear (= --prune) and --deps SPEC...
With --target, a --prefix that names one kind's key prefix (agent:tools for
--type tools, agent:workflows or agent:skills for workflows, agent:deps for
deps) means the storage prefix before it (agent). A workflows bootstrap in this
form needs no --library: it publishes as library 'default', does not prune
unless --clear, and keeps the ownership rules above. diff in this form prints
py-code-mode's marks: + in storage only, - in the source only.
"""

# What a bootstrap in py-code-mode's form publishes as: it has no --library option.
DEFAULT_LIBRARY = "default"
_KIND_SEGMENTS = {"workflows": ("workflows", "skills"), "tools": ("tools",), "deps": ("deps",)}


# ---- shared options -------------------------------------------------------------------


def _add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target (Redis by default, or a FileStorage folder)")
    g.add_argument("--redis-url", help="redis:// or rediss:// URL (default: $REDIS_URL)")
    g.add_argument(
        "--target",
        metavar="URL",
        help="py-code-mode's form of --redis-url; a per-kind --prefix (agent:tools) is mapped",
    )
    g.add_argument("--prefix", help="key prefix (default: $STORAGE_PREFIX or 'codemode')")
    g.add_argument("--workspace-id", help="workspace to scope to (default: $WORKSPACE_ID)")
    g.add_argument(
        "--dir", dest="target_dir", metavar="PATH", help="use a FileStorage folder instead of Redis"
    )
    g.add_argument(
        "--redis-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="Redis connect and socket timeout (default: 10)",
    )


def _add_source(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("source")
    one = g.add_mutually_exclusive_group(required=required)
    one.add_argument("--folder", metavar="DIR", help="a local folder")
    one.add_argument(
        "--source",
        metavar="PATH",
        help="py-code-mode's form: a local folder, or (deps) a requirements file",
    )
    one.add_argument(
        "--git",
        metavar="URL",
        help="a git repository: http(s)://, file:// or a local repository path",
    )
    g.add_argument("--ref", help="branch, tag or commit sha (default: the remote HEAD)")
    g.add_argument("--path", default="", help="sub-folder (or file) inside the source")
    g.add_argument(
        "--git-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"overall git timeout (default: {DEFAULT_TIMEOUT:g})",
    )
    a = p.add_argument_group("git credentials for http(s) (never on the command line)")
    a.add_argument("--token-file", metavar="PATH", help="file holding an access token")
    a.add_argument("--token-env", metavar="NAME", help="env var holding a token")
    a.add_argument(
        "--token-scheme",
        choices=("basic", "bearer"),
        default="basic",
        help="send the token as the basic-auth password (default; user name "
        "--username or 'x-access-token') or as a bearer token",
    )
    a.add_argument("--username", help="basic-auth user name")
    a.add_argument("--username-file", metavar="PATH", help="file holding the user name")
    a.add_argument("--password-file", metavar="PATH", help="file holding the password")
    a.add_argument("--password-env", metavar="NAME", help="env var holding the password")


def _add_kind(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--type",
        dest="kind",
        choices=(*KINDS, "skills"),
        default="workflows",
        help="what to move (default: workflows; skills is py-code-mode's older name for them)",
    )


def _read_secret_file(path: str, what: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ValidationError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if not value:
        raise ValidationError(f"{what} file {path} is empty")
    return value


def _read_secret_env(name: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ValidationError(f"{what} environment variable {name} is not set or empty")
    return value


def _auth(args: argparse.Namespace) -> GitAuth:
    token_sources = [s for s in (args.token_file, args.token_env) if s]
    password_sources = [s for s in (args.password_file, args.password_env) if s]
    if len(token_sources) > 1 or len(password_sources) > 1:
        raise ValidationError("give each credential once (a file or an env var, not both)")
    if token_sources and password_sources:
        raise ValidationError("use either a token or a password, not both")
    if args.username and args.username_file:
        raise ValidationError("give --username or --username-file, not both")
    username = args.username or (
        _read_secret_file(args.username_file, "username") if args.username_file else None
    )
    if args.token_file:
        token = _read_secret_file(args.token_file, "token")
    elif args.token_env:
        token = _read_secret_env(args.token_env, "token")
    else:
        token = None
    if token is not None:
        return GitAuth(token=token, username=username, token_scheme=args.token_scheme)
    if bool(username) != bool(password_sources):
        raise ValidationError("basic auth needs both a username and --password-file/--password-env")
    if not username:
        return GitAuth()
    password = (
        _read_secret_file(args.password_file, "password")
        if args.password_file
        else _read_secret_env(args.password_env, "password")
    )
    return GitAuth(username=username, password=password)


def _kind(args: argparse.Namespace) -> Kind:
    kind: str = args.kind
    return "workflows" if kind == "skills" else kind  # type: ignore[return-value]


def _pycodemode_form(args: argparse.Namespace) -> bool:
    return getattr(args, "target", None) is not None


def _source(args: argparse.Namespace) -> SourceSpec:
    if getattr(args, "source", None) is not None:
        source = Path(args.source).expanduser()
        if source.is_file():  # a requirements file: the file inside its folder
            if args.path:
                raise ValidationError("--path needs --source to be a folder")
            folder, path = str(source.parent), source.name
        else:
            folder, path = str(source), args.path
        return SourceSpec(folder=folder, path=path, auth=_auth(args), timeout=args.git_timeout)
    return SourceSpec(
        folder=args.folder,
        git_url=args.git,
        ref=args.ref,
        path=args.path,
        auth=_auth(args),
        timeout=args.git_timeout,
    )


def _storage_prefix(prefix: str | None, kind: Kind) -> str | None:
    """py-code-mode's CLI takes the key prefix of one kind's store (its storage puts
    tools under `{prefix}:tools`): `agent:tools` for tools means our storage prefix
    `agent`. A prefix without the kind's segment is the storage prefix itself."""
    if prefix is None:
        return None
    for segment in _KIND_SEGMENTS[kind]:
        head, sep, tail = prefix.rpartition(":")
        if sep and head and tail == segment:
            return head
    return prefix


def _target(args: argparse.Namespace) -> TargetSpec:
    if _pycodemode_form(args):
        if args.redis_url is not None or args.target_dir is not None:
            raise ValidationError("give --target, --redis-url or --dir, not more than one")
        url = args.target
        scheme = url.partition("://")[0] if "://" in url else ""
        if scheme not in ("redis", "rediss", "unix"):
            raise ValidationError(
                f"--target {url!r}: use a redis://, rediss:// or unix:// URL "
                "(--dir PATH for a FileStorage folder)"
            )
        return TargetSpec(
            redis_url=url,
            prefix=_storage_prefix(args.prefix, _kind(args)),
            workspace_id=args.workspace_id,
            timeout=args.redis_timeout,
        )
    return TargetSpec(
        redis_url=args.redis_url,
        directory=args.target_dir,
        prefix=args.prefix,
        workspace_id=args.workspace_id,
        timeout=args.redis_timeout,
    )


def _library(args: argparse.Namespace) -> str | None:
    return validate_library_name(args.library) if args.library is not None else None


async def _with_storage(
    args: argparse.Namespace, fn: Callable[[Storage], Awaitable[T]], create: bool = False
) -> T:
    """Run `fn` on the opened target; only a publishing bootstrap may create a --dir."""
    storage = await open_storage(_target(args), create=create)
    try:
        return await fn(storage)
    finally:
        await storage.close()


def _has_source(args: argparse.Namespace) -> bool:
    return bool(args.folder or args.git or getattr(args, "source", None))


def _load(args: argparse.Namespace) -> tuple[Catalog, str, str]:
    """The source's catalog of `--type`, its revision, and where it came from; inline
    `--deps` specs (py-code-mode's form) are added to a deps source, or are one."""
    kind = _kind(args)
    inline: list[str] = getattr(args, "inline_deps", None) or []
    if inline and not _has_source(args):
        text = "\n".join(inline) + "\n"
        catalog = build_catalog("deps", {"requirements.txt": text.encode()})
        return catalog, f"inline:{catalog.digest}", "--deps"
    snapshot = load_snapshot(_source(args), relevant(kind))
    files = snapshot.files
    if inline:
        name = "requirements.txt" if "requirements.txt" in files else next(iter(files), "")
        base = files.get(name, b"")
        files = {name or "requirements.txt": base + b"\n" + "\n".join(inline).encode() + b"\n"}
    catalog = build_catalog(kind, files)
    revision = snapshot.revision or f"folder:{catalog.digest}"
    return catalog, revision, snapshot.origin


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


# ---- commands -------------------------------------------------------------------------


def _write_result(path: str | None, text: str) -> None:
    if path:
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        except OSError as exc:
            raise ValidationError(f"cannot write --result-file {path}: {exc.strerror}") from None


def cmd_bootstrap(args: argparse.Namespace) -> int:
    """Print the JSON result; with --result-file also write it (or, on failure, the
    same one-line error stderr gets) where the operator reads it back."""
    if args.result_file:  # unwritable: fail before anything is published
        try:
            with open(args.result_file, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise ValidationError(
                f"cannot write --result-file {args.result_file}: {exc.strerror}"
            ) from None
    try:
        result = _bootstrap(args)
    except CodemodeError as exc:
        with contextlib.suppress(CodemodeError):
            _write_result(args.result_file, f"codemode: error: {exc}")
        raise
    data = result.to_dict()
    _print_json(data)
    _write_result(args.result_file, json.dumps(data, sort_keys=True))
    return 0


def _bootstrap(args: argparse.Namespace) -> SyncResult:
    kind = _kind(args)
    library = _library(args)
    if args.inline_deps is not None and kind != "deps":
        raise ValidationError("--deps needs --type deps")
    if args.clear:
        if args.prune is False:
            raise ValidationError("--clear is --prune: it cannot go with --no-prune")
        args.prune = True
    if _pycodemode_form(args) and kind == "workflows" and library is None and not args.delete:
        library = DEFAULT_LIBRARY
        if args.prune is None:  # py-code-mode's bootstrap adds; it removes only with --clear
            args.prune = False
    if args.delete:
        if library is None or kind != "workflows":
            raise ValidationError("--delete needs --library and --type workflows")
        if _has_source(args) or args.inline_deps:
            raise ValidationError("--delete takes no source")
        return asyncio.run(_with_storage(args, lambda s: unpublish_library(s, library)))
    if not (_has_source(args) or args.inline_deps):
        raise ValidationError("give a source: --folder DIR, --git URL or --source PATH")
    if kind == "workflows" and library is None:
        raise ValidationError("bootstrap of workflows needs --library NAME (the owner)")
    prune = args.prune if args.prune is not None else kind == "workflows"

    async def run(storage: Storage) -> SyncResult:
        # Storage is connected (pinged) first, so an unreachable Redis fails before any
        # fetch; what it holds is read after the fetch, inside the publishing transaction.
        catalog, revision, origin = await asyncio.to_thread(_load, args)
        if not len(catalog) and not args.allow_empty:
            raise ValidationError(
                f"no {kind} found in {origin} (path {args.path or '.'!r}); "
                "pass --allow-empty to publish an empty set"
            )
        if kind == "workflows":
            assert library is not None
            return await bootstrap_workflows(
                storage, library, catalog, revision, prune, force=args.force, adopt=args.adopt
            )
        sync = sync_tools if kind == "tools" else sync_deps
        result = await sync(storage, catalog, revision, prune)
        result.library = library
        return result

    return asyncio.run(_with_storage(args, run, create=True))


def cmd_diff(args: argparse.Namespace) -> int:
    library = _library(args)

    async def run(storage: Storage) -> Any:
        catalog, _, _ = _load(args)
        return await diff_catalog(storage, catalog, library)

    diff = asyncio.run(_with_storage(args, run))
    if args.json:
        _print_json(diff.to_dict())
    elif _pycodemode_form(args):
        for line in _pycodemode_lines(diff.added, diff.removed, diff.changed, diff.unchanged):
            print(line)
    else:
        for line in diff.lines():
            print(line)
    return 1 if args.exit_code and diff.differs else 0


def _pycodemode_lines(
    source_only: list[str], stored_only: list[str], changed: list[str], same: list[str]
) -> list[str]:
    """py-code-mode's diff marks, which read from storage's side: + what storage has
    and the source lacks (an agent created it), - what only the source has."""
    marked = [("+", n, " (in storage only)") for n in stored_only]
    marked += [("-", n, " (in the source only)") for n in source_only]
    marked += [("~", n, " (changed)") for n in changed] + [("=", n, "") for n in same]
    return [f"  {mark} {name}{note}" for mark, name, note in sorted(marked, key=lambda m: m[1])]


def cmd_list(args: argparse.Namespace) -> int:
    library = _library(args)
    kind = _kind(args)
    entries = asyncio.run(_with_storage(args, lambda s: list_entries(s, kind, library)))
    if args.json:
        _print_json([e.to_dict() for e in entries])
        return 0
    for entry in entries:
        owner = f" [{entry.owner}]" if entry.owner else ""
        desc = entry.description.splitlines()[0] if entry.description else ""
        print(f"{entry.name}{owner}" + (f"  {desc}" if desc else ""))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    library = _library(args)
    kind = _kind(args)
    if (args.to is None) == (args.dest is None):
        raise ValidationError("give the destination folder once: --to DIR (or --dest DIR)")
    to = args.to if args.to is not None else args.dest
    written = asyncio.run(_with_storage(args, lambda s: pull_to_folder(s, kind, to, library)))
    _print_json({"to": to, "type": kind, "written": len(written)})
    return 0


# ---- registration ---------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `store` and its subcommands to the top-level `codemode` parser."""
    store = subparsers.add_parser(
        "store",
        help="move workflows, tools and deps between folders, git and storage",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = store.add_subparsers(dest="store_command", required=True, metavar="STORE_COMMAND")

    boot = sub.add_parser(
        "bootstrap",
        help="publish a source into storage (atomic, prunes what the library owns)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    boot.add_argument("--library", help="the WorkflowLibrary that owns what is published")
    _add_kind(boot)
    _add_source(boot, required=False)  # --delete takes none
    boot.add_argument(
        "--prune",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="remove what the library owns but the source no longer has "
        "(default: on for workflows, off for tools and deps)",
    )
    boot.add_argument(
        "--force",
        action="store_true",
        help="compare every workflow even when the digest says nothing changed",
    )
    boot.add_argument(
        "--adopt",
        action="store_true",
        help="take over same-named workflows an agent created (default: such "
        "a name is a conflict and nothing is written)",
    )
    boot.add_argument(
        "--delete",
        action="store_true",
        help="remove everything --library owns, and its record; no source",
    )
    boot.add_argument(
        "--clear",
        action="store_true",
        help="py-code-mode's name for --prune (only what the library owns is removed)",
    )
    boot.add_argument(
        "--deps",
        dest="inline_deps",
        nargs="+",
        metavar="SPEC",
        help="package specs to publish with --type deps (py-code-mode's form)",
    )
    boot.add_argument(
        "--allow-empty",
        action="store_true",
        help="allow publishing an empty source (prunes everything it owned)",
    )
    boot.add_argument(
        "--result-file",
        metavar="PATH",
        help="also write the JSON result here (e.g. /dev/termination-log)",
    )
    _add_target(boot)
    boot.set_defaults(func=cmd_bootstrap)

    diff = sub.add_parser("diff", help="compare a source with storage (+ - ~ = lines)")
    diff.add_argument("--library", help="only this library's workflows can show as removed")
    _add_kind(diff)
    _add_source(diff)
    diff.add_argument("--json", action="store_true", help="print one JSON object")
    diff.add_argument("--exit-code", action="store_true", help="exit 1 when there are changes")
    _add_target(diff)
    diff.set_defaults(func=cmd_diff)

    lst = sub.add_parser("list", help="list what storage holds")
    lst.add_argument("--library", help="only workflows this library owns")
    _add_kind(lst)
    lst.add_argument("--json", action="store_true", help="print a JSON array")
    _add_target(lst)
    lst.set_defaults(func=cmd_list)

    pull = sub.add_parser("pull", help="write what storage holds into a folder as files")
    pull.add_argument("--to", metavar="DIR", help="destination folder")
    pull.add_argument("--dest", metavar="DIR", help="py-code-mode's name for --to")
    pull.add_argument("--library", help="only workflows this library owns")
    _add_kind(pull)
    _add_target(pull)
    pull.set_defaults(func=cmd_pull)
