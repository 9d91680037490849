"""The system under chaos, on this machine, and the faults it can be dealt.

`System.start` runs a control plane of its own (hack/controlplane.py: the chaos loop kills its
etcd and kube-apiserver, which no other test may share), installs deploy/, starts the S3 server
(hack/s3server.py, with user accounts), the fault-injecting proxy in front of the API server
(hack/chaos/proxy.py), and, through hack/localgate.py, the verifier sidecar (file:// and s3://
artifacts, reading S3 with an account that may only read) and the operator, which reaches the
API server only through the proxy, as its ServiceAccount, with its clock offset by the file
`clock` (flashgate/operator/testclock.py). A second operator replica (`replica`) is started for
the scenario that kills one replica mid-publish. Once the fleets exist, `start_delivery` runs the
delivery service for them (its ServiceAccount, a read-only S3 account, a device CA per fleet),
and `delivery_device` is a device certificate of each fleet to ask it with.

The admission webhook of the primary operator covers the guarded fleets only: in the open ones
every release reaches the gate itself, as when the webhook is down with failurePolicy Ignore
(the webhook is advice; the gate decides).

Components are killed with SIGKILL and started again (`kill`, `start`); each operator process
gets a name of its own (POD_NAME), so that its Published events and its metric can be matched.
Nothing here decides anything about the gate: that is hack/chaos/invariants.py's.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import controlplane
import localgate
import s3server

from chaos.invariants import Setting
from chaos.proxy import FaultProxy
from flashgate.delivery.devcerts import DeviceCA
from flashgate.operator.tls import make_serving_cert
from flashgate.signing.filekeys import KeySigner, generate
from flashgate.trust import Algorithm, Policy
from flashgate.trust.keyring import root_key
from flashgate.trust.vocabulary import Tier

BUCKET = "chaos-firmware"
COMPONENTS = ("operator", "sidecar", "kube-apiserver", "etcd", "s3", "delivery")
"""What `kill` and `start_component` know."""


@dataclass
class System:
    workdir: Path
    plane: controlplane.ControlPlane
    s3: s3server.S3Server | None
    proxy: FaultProxy
    root: KeySigner
    primary: localgate.LocalGate
    replica: localgate.LocalGate
    open_fleets: list[str] = field(default_factory=list)
    starts: Counter[str] = field(default_factory=Counter)
    instances: dict[int, str] = field(default_factory=dict)  # metrics port -> POD_NAME
    offset: float = 0.0
    delivery_config: dict[str, Any] = field(default_factory=dict)
    delivery_devices: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # crt, key

    @property
    def clock(self) -> Path:
        return self.workdir / "clock-offset"

    @property
    def kubectl(self) -> Path:
        return self.plane.binaries / "kubectl"

    @classmethod
    def start(cls, workdir: Path, with_s3: bool = True) -> System:
        workdir.mkdir(parents=True, exist_ok=True)
        plane = controlplane.ControlPlane(workdir=workdir / "control-plane").start()
        localgate.install(plane.binaries / "kubectl", plane.kubeconfig)
        s3 = s3server.S3Server(workdir=workdir / "s3", iam=True).start() if with_s3 else None
        if s3 is not None:
            s3.create_bucket(BUCKET)
        proxy = FaultProxy(plane.server, plane.workdir / "pki" / "ca.crt", workdir).start()
        root = generate(Algorithm.ED25519)
        sidecar_extra = {} if s3 is None else {
            "allowedHosts": ["localhost"], "caFile": str(s3.ca_file),
            "s3": {**_s3_endpoint(s3), **s3.read_only_files(BUCKET, workdir / "sidecar-s3")}}
        roots = [{"publicKey": root.public_pem, "algorithm": str(root.algorithm)}]
        primary = localgate.LocalGate(kubectl=plane.binaries / "kubectl",
                                      kubeconfig=plane.kubeconfig, workdir=workdir / "primary",
                                      roots=roots, sidecar_extra=sidecar_extra,
                                      operator_cluster=proxy.cluster)
        replica = localgate.LocalGate(kubectl=plane.binaries / "kubectl",
                                      kubeconfig=plane.kubeconfig, workdir=workdir / "replica",
                                      roots=roots, sidecar_port=primary.sidecar_port,
                                      operator_cluster=proxy.cluster)
        for gate in (primary, replica):
            gate.workdir.mkdir(parents=True, exist_ok=True)
        system = cls(workdir, plane, s3, proxy, root, primary, replica)
        system.set_offset(0.0)
        primary.start_sidecar()
        system.start_operator(primary)
        return system

    def setting(self, served: dict[str, tuple[int, bytes]]) -> Setting:
        """What the checker must know: the sidecar's roots and policy (LocalGate's), and what is
        served (filled in as the loop serves artifacts)."""
        root = root_key(self.root.spki_der, self.root.algorithm)
        return Setting(roots=(root,), policy=Policy({Tier.BOOTLOADER: 2}, 100), served=served)

    # ---- operators ----------------------------------------------------------------------------

    def start_operator(self, gate: localgate.LocalGate, failpoints: Sequence[str] = ()) -> None:
        primary = gate is self.primary
        self.starts[gate.workdir.name] += 1
        name = f"{gate.workdir.name}-{self.starts[gate.workdir.name]}"
        self.instances[gate.metrics_port] = name
        gate.start_operator(register_webhook=primary, failpoints=failpoints,
                            wait_ready=not failpoints,
                            extra_env={"POD_NAME": name,
                                       "FLASHGATE_CLOCK_OFFSET_FILE": str(self.clock)})
        if primary:
            self.scope_webhook()

    def scope_webhook(self) -> None:
        """The primary's webhook leaves the open fleets alone (see the module docstring)."""
        if not self.open_fleets:
            return
        selector = {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                          "operator": "NotIn", "values": self.open_fleets}]}
        patch = [{"op": "replace", "path": f"/webhooks/{i}/namespaceSelector", "value": selector}
                 for i in range(2)]
        localgate.kubectl_run(self.kubectl, self.plane.kubeconfig, "patch",
                              "validatingwebhookconfiguration", self.primary.webhook_config,
                              "--type=json", "-p", json.dumps(patch))

    def operators(self) -> list[localgate.LocalGate]:
        """The operators running now."""
        return [g for g in (self.primary, self.replica)
                if g.operator is not None and g.operator.poll() is None]

    # ---- the clock -----------------------------------------------------------------------------

    def set_offset(self, seconds: float) -> None:
        """Every operator's clock is time.time() + seconds from now on (a jump)."""
        self.offset = seconds
        staged = self.clock.with_suffix(".new")
        staged.write_text(f"{seconds}\n")
        staged.replace(self.clock)

    def operator_now(self) -> int:
        return int(time.time() + self.offset)

    # ---- faults -------------------------------------------------------------------------------

    def kill(self, component: str) -> None:
        if component == "operator":
            self.primary.stop_operator(kill=True)
        elif component == "sidecar":
            self.primary._stop(self.primary.sidecar, kill=True)
        elif component in ("kube-apiserver", "etcd"):
            self.plane.kill(component)
        elif component == "s3" and self.s3 is not None:
            self.s3.kill()
        elif component == "delivery":
            self.primary._stop(self.primary.delivery, kill=True)
        else:
            raise ValueError(f"unknown component {component!r} (one of {COMPONENTS})")

    def start_component(self, component: str) -> None:
        if component == "operator":
            self.start_operator(self.primary)
        elif component == "sidecar":
            self.primary.start_sidecar()
        elif component in ("kube-apiserver", "etcd"):
            self.plane.restart(component)
        elif component == "s3" and self.s3 is not None:
            self.s3.restart()
        elif component == "delivery":
            self.primary.start_delivery(self.delivery_config)
        else:
            raise ValueError(f"unknown component {component!r} (one of {COMPONENTS})")

    # ---- the delivery service ------------------------------------------------------------------

    def start_delivery(self, fleets: Sequence[str]) -> None:
        """The delivery service for `fleets` (bound to read their ConfigMaps), with a device CA
        of each and one device certificate of each to ask it with."""
        work = self.workdir / "delivery"
        _, cert, key = make_serving_cert(("127.0.0.1", "localhost")).write(work / "tls")
        cas = {}
        for fleet in fleets:
            self.primary.bind_delivery(fleet)
            ca = DeviceCA(f"{fleet} device CA")
            cas[fleet] = str(ca.write(work / f"{fleet}-ca.pem"))
            self.delivery_devices[fleet] = ca.issue(fleet, "chaos-device").write(work, fleet)
        self.delivery_config = {
            "fleets": {f: {"deviceCAFiles": [cas[f]]} for f in fleets},
            "tls": {"certFile": str(cert), "keyFile": str(key)},
            **({"s3": {**_s3_endpoint(self.s3), **self.s3.read_only_files(BUCKET, work / "s3")}}
               if self.s3 is not None else {})}
        self.primary.start_delivery(self.delivery_config)

    @property
    def delivery_ca(self) -> Path:
        """The CA of the delivery service's TLS certificate (as devices pin it)."""
        return self.workdir / "delivery" / "tls" / "ca.crt"

    def stop(self) -> None:
        for gate in (self.replica, self.primary):
            gate.stop_operator()
        self.primary.stop_delivery()
        self.primary.stop_sidecar()
        self.proxy.stop()
        if self.s3 is not None:
            self.s3.stop()
        self.plane.stop()


def _s3_endpoint(s3: s3server.S3Server) -> dict[str, str]:
    # https://localhost: loopback addresses stay refused by the sidecar; the name is allowed.
    return {"endpoint": f"https://localhost:{s3.port}", "region": "us-east-1"}
