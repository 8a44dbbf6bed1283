"""Which session a gateway request is for, read from its path alone."""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "/v1/namespaces/"
# DNS-1123 labels (namespaces) and subdomains (CodeSession names): anything else can name
# no object, so it is refused before any Kubernetes call.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


@dataclass(frozen=True)
class Route:
    namespace: str
    name: str
    path: str  # the session server's path, with its leading slash

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name


class BadRoute(ValueError):
    """The path names no session; the message says what a path looks like."""


def parse(path: str) -> Route:
    """`/v1/namespaces/{ns}/codesessions/{name}/{rest}` -> Route(ns, name, `/{rest}`)."""
    if not path.startswith(PREFIX):
        raise BadRoute(f"no session in path {path!r}: use {PREFIX}{{ns}}/codesessions/{{name}}/…")
    parts = path[len(PREFIX) :].split("/", 3)
    if len(parts) < 3 or parts[1] != "codesessions":
        raise BadRoute(f"no session in path {path!r}: use {PREFIX}{{ns}}/codesessions/{{name}}/…")
    namespace, _, name = parts[:3]
    if not _LABEL.fullmatch(namespace):
        raise BadRoute(f"{namespace!r} is not a namespace name")
    if not _SUBDOMAIN.fullmatch(name):
        raise BadRoute(f"{name!r} is not a CodeSession name")
    rest = parts[3] if len(parts) == 4 else ""
    return Route(namespace, name, "/" + rest)
