"""The delivery service: the device-facing HTTPS service that serves what the operator published
(job documents with presigned artifact URLs, trust bundles) and takes device status reports.
Its own process (`flashgate-delivery`); docs/delivery.md."""
