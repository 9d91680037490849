"""The verifier sidecar: a separate process, without Kubernetes credentials, that fetches artifacts
(bounded streams) and verifies releases and key endorsements through flashgate.trust against the
fleet roots of its own configuration. The operator talks to it through
`flashgate.verifier_api.client.VerifierClient`; the request and answer bodies are
`flashgate.verifier_api.models`.

Modules: `config` (the sidecar's file), `urlpolicy` and `fetch` (where from and how artifacts are
read), `s3` (s3:// URLs), `service` (the verification logic; key rings from
`flashgate.trust.fleet`), `server` (HTTP API and process), `metrics`.
"""
