"""The Redis key layout of docs/architecture.md §3, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from codemode_session.names import validate_prefix, validate_workspace_id


@dataclass(frozen=True)
class KeyLayout:
    """Keys for `prefix` and an optional `workspace_id`.

    `root` (R) holds what every workspace of a prefix shares (deps, tools);
    `scope` (P) holds what one workspace owns. With no workspace id, P is R:
    py-code-mode's legacy unscoped layout.
    """

    prefix: str
    workspace_id: str | None = None

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        validate_workspace_id(self.workspace_id)

    @property
    def root(self) -> str:
        return self.prefix

    @property
    def scope(self) -> str:
        if self.workspace_id is None:
            return self.prefix
        return f"{self.prefix}:ws:{self.workspace_id}"

    @property
    def workflows(self) -> str:
        return f"{self.scope}:workflows:__workflows__"

    @property
    def skills(self) -> str:
        """py-code-mode's skills-era key for the same records ({"name", "description",
        "source", "parameters"} JSON by name): read where `workflows` lacks a name, and
        written alongside it, so readers of either era see what the other wrote."""
        return f"{self.scope}:skills:__skills__"

    @property
    def workflow_owners(self) -> str:
        return f"{self.scope}:workflows:__owners__"

    def artifact(self, name: str) -> str:
        return f"{self.scope}:artifacts:{name}"

    @property
    def artifact_index(self) -> str:
        return f"{self.scope}:artifacts:__index__"

    def library(self, name: str) -> str:
        return f"{self.scope}:libraries:{name}"

    @property
    def usage(self) -> str:
        """(ours) hash: `bytes` = stored artifact data plus agent-saved workflow sources,
        kept by the session server in the same transaction as each write (quotas)."""
        return f"{self.scope}:usage"

    @property
    def deps(self) -> str:
        """Set of specs every workspace of the prefix installs; written only by the store
        (admin credentials), read-only to workspaces. py-code-mode's key: its deps store
        keeps `{key prefix}:deps` under the key prefix `{prefix}:deps`."""
        return f"{self.root}:deps:deps"

    @property
    def workspace_deps(self) -> str:
        """(ours) set of specs this workspace's agents added; with no workspace id it is
        `deps` itself (py-code-mode's single-tenant layout)."""
        return f"{self.scope}:deps:deps"

    def vectors(self, index: str) -> str:
        """(py-code-mode's `{prefix}:vectors:` naming) hash: name -> embedding record of one
        search index (`workflows_idx`, `tools_idx`); see search/vectors.py."""
        return f"{self.scope}:vectors:{index}"

    @property
    def tools(self) -> str:
        return f"{self.root}:tools:__tools__"

    # Session history in Agentix's layout (issue 13; storage/history.py writes it).
    def history_session(self, session_id: str) -> str:
        """Hash: session_id, agent_id, created_at, updated_at (ISO 8601), metadata (JSON)."""
        return f"{self.scope}:session:{session_id}"

    def history_messages(self, session_id: str) -> str:
        """List of JSON messages {role, content, timestamp}, oldest first."""
        return f"{self.scope}:messages:{session_id}"

    def history_index(self, agent_id: str) -> str:
        """Sorted set of an agent's session ids scored by updated_at (unix seconds)."""
        return f"{self.scope}:index:{agent_id}"

    def workspace_patterns(self) -> list[str]:
        """Glob patterns covering every key this workspace may touch (for Redis ACLs)."""
        return [f"{self.scope}:*", self.deps, f"{self.root}:tools:*"]
