"""The wire contract between the operator and the verifier sidecar: request and response models
(`models`) and the operator's client (`client`). Neither side owns it; both import it."""
