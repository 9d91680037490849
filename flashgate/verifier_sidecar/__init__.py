"""The verifier sidecar: a separate process, without Kubernetes credentials, that fetches artifacts
(bounded streams) and verifies releases and key endorsements through flashgate.trust against the
fleet roots of its own configuration. The operator talks to it through `api.VerifierClient`.

Modules: `api` (request/response models, client), `config` (the sidecar's file), `urlpolicy` and
`fetch` (where from and how artifacts are read), `service` (the verification logic), `server`
(HTTP API and process), `metrics`.
"""
