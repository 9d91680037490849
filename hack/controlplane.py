#!/usr/bin/env python3
"""A real Kubernetes control plane (etcd + kube-apiserver) on 127.0.0.1, without Docker.

`build` obtains pinned kube-apiserver, kubectl and etcd binaries by compiling them from source
through the Go module proxy, cached outside the repo (~/.cache/flashgate/k8s/<version>/) so that a
second run is instant. When KUBEBUILDER_ASSETS points at a directory holding the three binaries
(users of setup-envtest), those are used instead.

`run` starts etcd and kube-apiserver on free loopback ports with TLS and an admin client
certificate, the way controller-runtime's envtest does, writes a kubeconfig and runs until
Ctrl-C. The pytest fixtures and the demo use `ControlPlane` from this module directly.

Either process can be killed (SIGKILL) and started again on its data directory, ports and
certificates (`kill`, `restart`): what the chaos loop (hack/chaos) does to the control plane.

`build` needs only the standard library and Go, so it runs before anything else is installed;
starting needs the `cryptography` package (for the throwaway CA and certificates).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Pinned versions. etcd follows what k8s.io/kubernetes's own go.mod requires for this minor.
KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.3"
BINARIES = ("kube-apiserver", "kubectl", "etcd")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flashgate" / "k8s"


def log(message: str) -> None:
    print(f"[control-plane] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Building the binaries
# --------------------------------------------------------------------------------------------


def assets_dir() -> Path | None:
    """KUBEBUILDER_ASSETS when it holds all binaries, else None."""
    env = os.environ.get("KUBEBUILDER_ASSETS")
    if env and all((Path(env) / name).is_file() for name in BINARIES):
        return Path(env)
    return None


def bin_dir(version: str = KUBERNETES_VERSION) -> Path:
    return cache_root() / f"{version}-etcd{ETCD_VERSION}" / "bin"


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    log(f"$ go {' '.join(args)}   (in {cwd})")
    started = time.monotonic()
    proc = subprocess.Popen(["go", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    last_beat = started
    for line in proc.stdout:
        line = line.rstrip()
        # `go mod download -x` and `go build -v` are chatty: show a line every few seconds so the
        # build visibly progresses without flooding the terminal.
        now = time.monotonic()
        if now - last_beat > 5 or "error" in line.lower():
            log(f"  ... {int(now - started)}s {line[:150]}")
            last_beat = now
    if proc.wait() != 0:
        raise SystemExit(f"go {' '.join(args)} failed (exit {proc.returncode}); see output above")
    log(f"  done in {int(time.monotonic() - started)}s")


def _staging_replaces(k8s_version: str, env: dict[str, str], workdir: Path) -> list[str]:
    """The staging modules k8s.io/kubernetes replaces with ./staging/..., read from its go.mod."""
    out = subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{k8s_version}"],
                         cwd=workdir, env=env, check=True, capture_output=True, text=True).stdout
    gomod = Path(json.loads(out)["GoMod"]).read_text()
    staging_tag = "v0." + k8s_version.split(".", 1)[1]  # v1.37.2 -> v0.37.2
    replaces = []
    for line in gomod.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "=>" and parts[2].startswith("./staging/"):
            replaces.append(f"{parts[0]} => {parts[0]} {staging_tag}")
    if not replaces:
        raise SystemExit(f"found no staging replace directives in k8s.io/kubernetes@{k8s_version}")
    return replaces


def build(version: str = KUBERNETES_VERSION) -> Path:
    """Return a directory with kube-apiserver, kubectl and etcd, building them if needed."""
    found = assets_dir()
    if found:
        log(f"using KUBEBUILDER_ASSETS={found}")
        return found
    out = bin_dir(version)
    if all((out / name).is_file() for name in BINARIES):
        return out
    if shutil.which("go") is None:
        raise SystemExit("Go is needed to build the control plane (https://go.dev/dl/)")
    log(f"building kube-apiserver and kubectl {version}, etcd {ETCD_VERSION} from source "
        f"into {out}; the first build takes several minutes on 2 cores")
    work = out.parent / "build"
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
    tmp_out = out.parent / "bin.tmp"
    shutil.rmtree(tmp_out, ignore_errors=True)
    tmp_out.mkdir(parents=True)

    # kube-apiserver and kubectl: a scratch module that requires k8s.io/kubernetes and points each
    # staging module at its published v0.x.y tag (go install refuses the replace directives).
    k8s = work / "kubernetes"
    k8s.mkdir(parents=True, exist_ok=True)
    (k8s / "go.mod").write_text("module flashgate.dev/k8sbuild\n\ngo 1.24\n")
    replaces = _staging_replaces(version, env, k8s)
    minor = version.split(".")[1]
    (k8s / "go.mod").write_text(
        "module flashgate.dev/k8sbuild\n\ngo 1.24\n\n"
        f"require k8s.io/kubernetes {version}\n\nreplace (\n\t" + "\n\t".join(replaces) + "\n)\n")
    (k8s / "tools.go").write_text(
        "//go:build tools\n\npackage tools\n\nimport (\n"
        '\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n')
    _go(["mod", "tidy"], k8s, env)
    ldflags = " ".join([
        f"-X k8s.io/component-base/version.gitVersion={version}",
        "-X k8s.io/component-base/version.gitMajor=1",
        f"-X k8s.io/component-base/version.gitMinor={minor}",
        "-X k8s.io/component-base/version.gitTreeState=clean",
        "-X k8s.io/client-go/pkg/version.gitVersion=" + version,
        "-X k8s.io/client-go/pkg/version.gitMajor=1",
        f"-X k8s.io/client-go/pkg/version.gitMinor={minor}",
        "-s -w",
    ])
    _go(["build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(tmp_out) + "/",
         "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl"], k8s, env)

    # etcd: its server module builds without replaces from a scratch module that requires it.
    etcd = work / "etcd"
    etcd.mkdir(parents=True, exist_ok=True)
    (etcd / "go.mod").write_text(
        "module flashgate.dev/etcdbuild\n\ngo 1.24\n\n"
        f"require go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n")
    (etcd / "tools.go").write_text(
        '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n')
    _go(["mod", "tidy"], etcd, env)
    _go(["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp_out / "etcd"),
         "go.etcd.io/etcd/server/v3"], etcd, env)

    shutil.rmtree(out, ignore_errors=True)
    tmp_out.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    log(f"built {', '.join(BINARIES)} into {out}")
    return out


# --------------------------------------------------------------------------------------------
# Running etcd + kube-apiserver
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _set_parent_death_signal() -> None:
    """Make the child get SIGKILL when the process that started it dies (Linux), so that even a
    killed test run leaves no etcd or kube-apiserver behind. SIGKILL, not SIGTERM: an orphaned
    kube-apiserver whose etcd is gone hangs in graceful shutdown on SIGTERM."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()


def _write_pki(directory: Path) -> None:
    """A throwaway CA, the API server's serving certificate, the admin client certificate
    (CN=admin, O=system:masters) and the service-account signing key, as envtest makes them."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flashgate-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(name: x509.Name, usage: x509.ObjectIdentifier,
             sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(hours=1))
                   .not_valid_after(now + dt.timedelta(days=7))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    import ipaddress

    serving = leaf(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
                   ExtendedKeyUsageOID.SERVER_AUTH,
                   [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    admin = leaf(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                            x509.NameAttribute(NameOID.COMMON_NAME, "admin")]),
                 ExtendedKeyUsageOID.CLIENT_AUTH, [])
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca.crt": ca.public_bytes(serialization.Encoding.PEM),
        "apiserver.crt": serving[0], "apiserver.key": serving[1],
        "admin.crt": admin[0], "admin.key": admin[1],
        "sa.key": pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o600)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver as local processes. Use as a context manager, or start()/stop()."""

    binaries: Path = field(default_factory=build)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="flashgate-cp-")))
    api_port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # How each process was started (name -> arguments), so that it can be started again alike.
    _args: dict[str, list[str]] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        self._args[name] = args
        logfile = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([str(self.binaries / name), *args], stdout=logfile,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_set_parent_death_signal)
        logfile.close()  # the child has its own descriptor
        previous = self.process(name)
        if previous is not None:  # a restart takes the place of the process it replaces
            self.processes[self.processes.index(previous)] = proc
        else:
            self.processes.append(proc)
        return proc

    def process(self, name: str) -> subprocess.Popen[bytes] | None:
        """The process started as `name` ("etcd" or "kube-apiserver"), running or not."""
        return next((p for p in self.processes if Path(str(p.args[0])).name == name), None)

    def kill(self, name: str) -> None:
        """SIGKILL one of the two processes, as a crash would (nothing is flushed or closed)."""
        proc = self.process(name)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, name: str, timeout: float = 150.0) -> None:
        """Start `name` again, killing it first if it still runs: the same data directory, ports
        and certificates; returns once the API server answers again (after etcd was down a
        while, kube-apiserver's etcd client reconnects with a backoff of up to two minutes)."""
        if name not in self._args:
            raise ValueError(f"{name} was never started here")
        self.kill(name)
        self._spawn(name, self._args[name])
        self._wait_ready(self.workdir / "pki", deadline=time.monotonic() + timeout)

    def start(self, timeout: float = 90.0) -> ControlPlane:
        started = time.monotonic()
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        _write_pki(pki)
        etcd_client, etcd_peer = free_port(), free_port()
        self._spawn("etcd", [
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ])
        self.api_port = free_port()
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--secure-port={self.api_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The endpoint reconciler refuses a loopback advertise address; nothing here needs the
            # `kubernetes` Service endpoints (no pods run), so it is switched off.
            "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--disable-admission-plugins=ServiceAccount",
            # PodSecurity is on by default; named here because tests/chart relies on it (a pod
            # template refused at `restricted`).
            "--enable-admission-plugins=PodSecurity",
            # Admission webhooks referenced by Service are called at an address of the Service's
            # EndpointSlices (set by hand in tests: no endpoints controller runs here), not at its
            # ClusterIP, which nothing routes without kube-proxy.
            "--enable-aggregator-routing=true",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--v=0",
        ])
        self._write_kubeconfig(pki)
        self._wait_ready(pki, deadline=started + timeout)
        log(f"kube-apiserver ready at {self.server} in {time.monotonic() - started:.1f}s "
            f"(kubeconfig {self.kubeconfig})")
        return self

    def _write_kubeconfig(self, pki: Path) -> None:
        import base64

        def b64(name: str) -> str:
            return base64.b64encode((pki / name).read_bytes()).decode()

        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "flashgate-test",
            "clusters": [{"name": "flashgate-test", "cluster": {
                "server": self.server, "certificate-authority-data": b64("ca.crt")}}],
            "users": [{"name": "admin", "user": {
                "client-certificate-data": b64("admin.crt"), "client-key-data": b64("admin.key")}}],
            "contexts": [{"name": "flashgate-test", "context": {
                "cluster": "flashgate-test", "user": "admin", "namespace": "default"}}],
        }, indent=2))
        self.kubeconfig.chmod(0o600)

    def _wait_ready(self, pki: Path, deadline: float) -> None:
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        last_error = ""
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; "
                                       f"see the logs in {self.workdir}")
            try:
                # readyz is true once etcd is reachable and the bootstrap hooks ran; the default
                # namespace is made by one of those hooks shortly after.
                with urllib.request.urlopen(f"{self.server}/api/v1/namespaces/default",
                                            context=context, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError as error:
                last_error = str(error)
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"kube-apiserver not ready in time ({last_error}); "
                           f"logs in {self.workdir}")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.binaries / "kubectl"), f"--kubeconfig={self.kubeconfig}",
                                 *args], input=input, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stderr}{result.stdout}")
        return result

    def stop(self) -> None:
        # kube-apiserver first (it is etcd's client), each with TERM, then KILL after a grace.
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.processes.clear()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or reuse the binaries; print their directory")
    run = sub.add_parser("run", help="start etcd + kube-apiserver and run until Ctrl-C")
    run.add_argument("--kubeconfig-out", type=Path, help="also copy the admin kubeconfig here")
    args = parser.parse_args()
    if args.command == "build":
        print(build())
        return
    with ControlPlane() as plane:
        if args.kubeconfig_out:
            shutil.copy(plane.kubeconfig, args.kubeconfig_out)
        print(f"export KUBECONFIG={args.kubeconfig_out or plane.kubeconfig}", flush=True)
        log("running; Ctrl-C stops etcd and kube-apiserver")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
