"""codemode operator: Workspace, CodeSession and WorkflowLibrary reconciled by kopf."""

GROUP = "codemode.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PREFIX = "codemode.dev"  # finalizer, annotation and label prefix
