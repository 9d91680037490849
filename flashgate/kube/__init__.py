"""Talking to the Kubernetes API server: an async client (`client`) and list-then-watch streams
with work queues (`runtime`). Shared by the operator and the delivery service; neither owns it."""
