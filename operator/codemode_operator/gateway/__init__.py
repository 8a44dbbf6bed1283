"""The gateway: one address for every CodeSession of an installation.

`/v1/namespaces/{ns}/codesessions/{name}/{path}` reaches `{path}` of that session's
server. The caller is a Kubernetes identity (TokenReview of its bearer token) and is let
through when RBAC allows it `create` on `codesessions/exec` for that session
(SubjectAccessReview), so each tenant's Roles are the policy. Run it with
`python -m codemode_operator.gateway`.
"""
