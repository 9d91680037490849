#!/usr/bin/env python3
"""flashgate end to end, on this machine: the gate publishes one release and refuses four.

Starts a local control plane (or uses --kubeconfig), installs the CRDs, makes a fleet root and
tier keys as DEVELOPMENT-ONLY file keys with the signing-station CLI, runs the verifier sidecar
and the operator as separate processes, applies sample releases with kubectl and prints what the
gate decided. Everything it writes goes to ./demo-out (git-ignored); it stops what it started.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
import controlplane  # noqa: E402
from localgate import LocalGate, install  # noqa: E402

FLEET = "fleet-demo"
PRODUCT = "gw-3000"
BIN = Path(sys.executable).parent


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


class Demo:
    def __init__(self, out: Path, kubeconfig: Path, kubectl: Path) -> None:
        self.out, self.kubeconfig, self.kubectl_path = out, kubeconfig, kubectl
        self.gate: LocalGate | None = None

    def kubectl(self, *args: str, check: bool = True,
                show: bool = False) -> subprocess.CompletedProcess[str]:
        if show:
            print(f"$ kubectl {' '.join(args)}", flush=True)
        result = subprocess.run([str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
                                capture_output=True, text=True)
        if show:
            print((result.stdout + result.stderr).rstrip(), flush=True)
        if check and result.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def flashgate(self, *args: str) -> None:
        print(f"$ flashgate {' '.join(args)}", flush=True)
        result = subprocess.run([str(BIN / "flashgate"), *args], cwd=self.out,
                                capture_output=True, text=True)
        for line in (result.stderr + result.stdout).strip().splitlines():
            print(f"    {line}", flush=True)
        if result.returncode != 0:
            raise SystemExit(f"flashgate {args[0]} failed (exit {result.returncode})")

    def phase(self, kind: str, name: str) -> str:
        out = self.kubectl("get", kind, name, "-n", FLEET, "-o", "json", check=False).stdout
        return str((json.loads(out or "{}").get("status") or {}).get("phase") or "")

    def wait_phase(self, kind: str, name: str, phases: set[str], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (phase := self.phase(kind, name)) in phases:
                return phase
            time.sleep(0.3)
        raise SystemExit(f"{kind} {name} did not reach {phases}; see {self.out}/operator.log")


def run(demo: Demo, keep_running: bool) -> None:
    out = demo.out

    say("Install the CRDs, the admission policies and the operator's identity (deploy/)")
    install(demo.kubectl_path, demo.kubeconfig)
    demo.kubectl("api-resources", "--api-group=ota.flashgate.dev", show=True)
    demo.kubectl("create", "namespace", FLEET, check=False)

    say("Signing station: a fleet root and one key per tier (DEVELOPMENT-ONLY file keys)")
    print("A real station keeps these in a PKCS#11 HSM; see docs/signing-station.md.")
    demo.flashgate("keygen", "--root", "--dev-file", "root.key", "--public-key-out", "root.pub.pem")
    for tier in ("application", "config"):
        demo.flashgate("keygen", "--tier", tier, "--dev-file", f"{tier}.key",
                       "--public-key-out", f"{tier}.pub.pem")
        demo.flashgate("endorse", "--root-dev-file", "root.key", "--key", f"{tier}.pub.pem",
                       "--tier", tier, "--fleet", FLEET, "--valid-for", "365d",
                       "--name", f"{tier}-2026", "-o", f"{tier}-2026.yaml")

    say("Start the verifier sidecar (no Kubernetes credentials) and the operator (its own "
        "ServiceAccount)")
    gate = demo.gate = LocalGate(
        kubectl=demo.kubectl_path, kubeconfig=demo.kubeconfig, workdir=out,
        roots=[{"publicKey": (out / "root.pub.pem").read_text(), "algorithm": "ed25519"}])
    artifacts = gate.artifacts
    gate.start_sidecar()
    gate.start_operator(register_webhook=False, namespaces=[FLEET])
    print(f"sidecar on 127.0.0.1:{gate.sidecar_port}, operator metrics on "
          f"127.0.0.1:{gate.metrics_port}; logs in {out}")

    say("Apply the endorsed SigningKeys")
    for tier in ("application", "config"):
        demo.kubectl("apply", "-f", str(out / f"{tier}-2026.yaml"))
        demo.wait_phase("signingkey", f"{tier}-2026", {"Active"})
    demo.kubectl("get", "signingkeys", "-n", FLEET, show=True)

    say("Sign five releases")
    def image(name: str, size: int) -> Path:
        path = artifacts / name
        path.write_bytes(os.urandom(size))
        return path

    def sign(name: str, key: str, version: str, sv: int, artifact: Path) -> Path:
        tier = key  # the demo names each dev key file after its tier
        demo.flashgate("sign", "--dev-file", f"{key}.key", "--tier", tier, "--fleet", FLEET,
                       "--product", PRODUCT, "--version", version, "--security-version", str(sv),
                       "--artifact", str(artifact), "--url", artifact.as_uri(),
                       "--name", name, "-o", f"{name}.yaml")
        return out / f"{name}.yaml"

    good = sign("app-4-2-0", "application", "4.2.0", 7, image("app-4.2.0.bin", 1 << 20))
    tampered_image = image("app-4.2.1.bin", 1 << 20)
    tampered = sign("app-4-2-1-tampered", "application", "4.2.1", 8, tampered_image)
    with tampered_image.open("r+b") as handle:  # one flipped bit after signing
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 1]))
    print("    (then flipped one bit of app-4.2.1.bin: the artifact is no longer what was signed)")
    wrong_tier = sign("boot-by-config-key", "config", "2.0.0", 3, image("boot-2.0.0.bin", 65536))
    doc = yaml.safe_load(wrong_tier.read_text())
    doc["spec"]["tier"] = "bootloader"  # an attacker with the config key targets the bootloader
    wrong_tier.write_text(yaml.safe_dump(doc, sort_keys=False))
    print("    (then declared it tier bootloader: a config key trying to ship a bootloader)")
    rollback = sign("app-4-1-0-rollback", "application", "4.1.0", 5, image("app-4.1.0.bin", 65536))
    model = image("model-2.bin", 4096)
    unsigned = out / "model-unsigned.yaml"
    sha = __import__("hashlib").sha256(model.read_bytes()).hexdigest()
    unsigned.write_text(yaml.safe_dump({
        "apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "FirmwareRelease",
        "metadata": {"name": "model-unsigned", "namespace": FLEET},
        "spec": {"tier": "config", "product": PRODUCT, "version": "2.0", "securityVersion": 4,
                 "artifact": {"url": model.as_uri(), "name": "model-2.bin", "sha256": sha,
                              "size": model.stat().st_size},
                 "signatures": []}}, sort_keys=False))
    print("    model-unsigned.yaml: an ML model pushed without any signature")

    say("kubectl apply them")
    demo.kubectl("apply", "-f", str(good), show=True)
    demo.wait_phase("firmwarerelease", "app-4-2-0", {"Published", "Rejected"})
    for path in (tampered, wrong_tier, rollback, unsigned):
        demo.kubectl("apply", "-f", str(path), show=True, check=False)
    bad = ("app-4-2-1-tampered", "boot-by-config-key", "app-4-1-0-rollback", "model-unsigned")
    for name in bad:
        with contextlib.suppress(SystemExit):
            demo.wait_phase("firmwarerelease", name, {"Published", "Rejected"}, timeout=30)

    say("What the gate decided")
    demo.kubectl("get", "firmwarereleases", "-n", FLEET, show=True)
    demo.kubectl("get", "firmwarereleases", "-n", FLEET, "-o",
                 "custom-columns=NAME:.metadata.name,MESSAGE:.status.message", show=True)
    demo.kubectl("get", "rollbackfloors", "-n", FLEET, show=True)
    channel = json.loads(demo.kubectl("get", "configmap", f"channel.{PRODUCT}.stable", "-n", FLEET,
                                      "-o", "json").stdout)
    print(f"\nchannel.{PRODUCT}.stable publishes: "
          + ", ".join(f"{k}: {json.loads(v)['release']}" for k, v in channel["data"].items()))
    metrics = [line for line in gate.metrics().splitlines()
               if line.startswith("flashgate_release_rejections_total{")]
    print("\n" + "\n".join(metrics))

    say("The admission webhook refuses the same attack at kubectl apply time")
    gate.stop_operator()
    print("restarting the operator so that it registers its ValidatingWebhookConfiguration")
    gate.start_operator(register_webhook=True, namespaces=[FLEET])
    doc["metadata"]["name"] = "boot-by-config-key-again"
    again = out / "boot-by-config-key-again.yaml"
    again.write_text(yaml.safe_dump(doc, sort_keys=False))
    demo.kubectl("apply", "-f", str(again), show=True, check=False)

    if keep_running:
        say(f"Running; KUBECONFIG={demo.kubeconfig}. Ctrl-C stops everything.")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


@contextlib.contextmanager
def cluster(kubeconfig: Path | None) -> Iterator[tuple[Path, Path]]:
    if kubeconfig:
        kubectl = shutil.which("kubectl") or str(controlplane.build() / "kubectl")
        yield kubeconfig, Path(kubectl)
        return
    say("Start a local Kubernetes control plane (etcd + kube-apiserver on 127.0.0.1)")
    with controlplane.ControlPlane() as plane:
        yield plane.kubeconfig, plane.binaries / "kubectl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, default=os.environ.get("FLASHGATE_KUBECONFIG"),
                        help="use this cluster instead of starting a local control plane")
    parser.add_argument("--keep-running", action="store_true",
                        help="keep everything running at the end until Ctrl-C")
    args = parser.parse_args()
    out = REPO / "demo-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    with cluster(args.kubeconfig) as (kubeconfig, kubectl):
        demo = Demo(out, kubeconfig, kubectl)
        try:
            run(demo, args.keep_running)
        finally:
            if demo.gate is not None:
                demo.gate.stop()
    say("Done: everything the demo started is stopped; its files are in demo-out/")


if __name__ == "__main__":
    main()
