"""The settings of a session pod, from its CodeSession and Workspace (no I/O).

Warm pool pods are built from the same function with a name of their own and an empty
CodeSession spec, so a pool pod is exactly the pod a CodeSession of the defaults gets,
less what only a binding tells it (reconcile/pool.py).
"""

from __future__ import annotations

from codemode_operator.api.codesession import CodeSessionSpec
from codemode_operator.api.common import parse_bytes, parse_duration
from codemode_operator.api.workspace import WorkspaceSpec
from codemode_operator.builders.session import SessionParams
from codemode_operator.kube import Obj
from codemode_operator.session_state import state_id_of
from codemode_operator.settings import OperatorConfig


def session_params(body: Obj, workspace: Obj, cfg: OperatorConfig) -> SessionParams:
    meta = body["metadata"]
    spec = CodeSessionSpec.model_validate(body.get("spec") or {})
    ws_spec = WorkspaceSpec.model_validate(workspace.get("spec") or {})
    defaults = ws_spec.session_defaults
    resources = spec.resources or defaults.resources
    return SessionParams(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        workspace=workspace["metadata"]["name"],
        workspace_id=ws_spec.workspace_id or workspace["metadata"]["name"],
        prefix=ws_spec.prefix,
        credentials_secret=(workspace.get("status") or {}).get("credentialsSecret", ""),
        image=spec.image or defaults.image or cfg.session_image,
        image_pull_policy=defaults.image_pull_policy,
        resources=resources.model_dump(exclude_none=True) if resources else {},
        runtime_class_name=spec.runtime_class_name or defaults.runtime_class_name,
        default_timeout=parse_duration(spec.default_timeout or defaults.default_timeout),
        max_execution_time=parse_duration(defaults.max_execution_time),
        allow_runtime_deps=defaults.allow_runtime_deps,
        memory_limit_mb=defaults.memory_limit_mb,
        tools_config_map=defaults.tools_config_map,
        max_storage_bytes=parse_bytes(ws_spec.limits.max_storage_bytes),
        max_artifact_bytes=parse_bytes(ws_spec.limits.max_artifact_bytes),
        max_workflows=ws_spec.limits.max_workflows,
        agent_id=spec.agent_id,
        state_id=state_id_of(meta["uid"]),
        fork_from=((body.get("status") or {}).get("forkedFrom") or None),
    )
