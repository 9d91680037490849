#!/usr/bin/env python3
"""A real S3-compatible server on 127.0.0.1 for the tests: Versity's S3 gateway (versitygw)
with its posix backend, serving TLS with a throwaway CA and checking SigV4 signatures.

`install` builds the pinned versitygw from source through the Go module proxy (Go is already
needed for the control plane), cached outside the repo in
~/.cache/flashgate/versitygw/<version>/bin/versitygw, so a second run is instant.
FLASHGATE_VERSITYGW=path uses an existing binary instead.

`S3Server` (a context manager) starts it on a free loopback port with a temporary data
directory, a CA and certificate for 127.0.0.1 and localhost, and an access key and secret
generated for this run; `create_bucket`, `put_object` and `delete_object` are signed requests
to it. With `iam=True` it keeps user accounts (versitygw's internal IAM, --iam-dir), and
`read_only_user(bucket)` makes an account that may only GET that bucket's objects (a user role
with a bucket policy granting s3:GetObject): credentials of the kind a reader should hold.
The process gets SIGKILL if the test run dies (the same parent-death signal as
hack/controlplane.py), so nothing is left behind.

`run` starts one and prints its endpoint, credentials and CA until Ctrl-C.

`install` needs only the standard library and Go; starting needs the `flashgate` package (for
the certificates).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from controlplane import _set_parent_death_signal, free_port

VERSITYGW_VERSION = "v1.8.0"
MODULE = "github.com/versity/versitygw"
REGION = "us-east-1"


def log(message: str) -> None:
    print(f"[s3-server] {message}", file=sys.stderr, flush=True)


def binary_path(version: str = VERSITYGW_VERSION) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flashgate" / "versitygw" / version / "bin" / "versitygw"


def find() -> Path | None:
    """The versitygw binary if it is installed (or given by FLASHGATE_VERSITYGW), else None."""
    given = os.environ.get("FLASHGATE_VERSITYGW")
    if given:
        return Path(given) if Path(given).is_file() else None
    path = binary_path()
    return path if path.is_file() else None


def install(version: str = VERSITYGW_VERSION) -> Path:
    """Return the versitygw binary, building it with `go install` if needed (about 1.5 minutes
    on 2 cores the first time, most of it compiling the AWS SDK)."""
    found = find()
    if found is not None:
        return found
    if os.environ.get("FLASHGATE_VERSITYGW"):
        raise SystemExit(f"FLASHGATE_VERSITYGW={os.environ['FLASHGATE_VERSITYGW']} is not a file")
    if shutil.which("go") is None:
        raise SystemExit("Go is needed to build versitygw (https://go.dev/dl/)")
    out = binary_path(version)
    tmp = out.parent.with_name("bin.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log(f"building versitygw {version} from source into {out.parent} (go install; about a "
        f"minute or two the first time)")
    started = time.monotonic()
    env = dict(os.environ, CGO_ENABLED="0", GOBIN=str(tmp), GOFLAGS="-mod=mod",
               GOTOOLCHAIN="local")
    ldflags = f"-s -w -X main.Version={version}"
    result = subprocess.run(["go", "install", "-trimpath", "-ldflags", ldflags,
                             f"{MODULE}/cmd/versitygw@{version}"], env=env, cwd=tmp,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"go install {MODULE}@{version} failed:\n{result.stderr[-3000:]}")
    shutil.rmtree(out.parent, ignore_errors=True)
    tmp.rename(out.parent)
    log(f"built versitygw {version} in {time.monotonic() - started:.0f}s")
    return out


# --------------------------------------------------------------------------------------------
# Signed requests (SigV4, standard library only: set-up does not depend on the code under test)
# --------------------------------------------------------------------------------------------


def _sign(method: str, host: str, path: str, body: bytes, key_id: str, secret: str,
          now: datetime, query: str = "") -> dict[str, str]:
    """`query` is the canonical query string (sorted, encoded), e.g. "policy="."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{REGION}/s3/aws4_request"
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    names = sorted(headers)
    canonical = "\n".join([method, path, query, "".join(f"{n}:{headers[n]}\n" for n in names),
                           ";".join(names), payload])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in (amz_date[:8], REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    del headers["host"]  # urllib sends it
    return headers


@dataclass
class S3Server:
    """versitygw on a free 127.0.0.1 port, TLS with its own CA, one generated access key."""

    binary: Path = field(default_factory=install)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="flashgate-s3-")))
    port: int = 0
    access_key_id: str = field(default_factory=lambda: "FG" + secrets.token_hex(9).upper())
    secret_access_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    iam: bool = False
    process: subprocess.Popen[bytes] | None = None
    readers: dict[str, list[str]] = field(default_factory=dict)  # bucket -> read-only accounts

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    @property
    def access_key_id_file(self) -> Path:
        return self.workdir / "access-key-id"

    @property
    def secret_access_key_file(self) -> Path:
        return self.workdir / "secret-access-key"

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def start(self, timeout: float = 30.0) -> S3Server:
        from flashgate.operator.tls import make_serving_cert

        started = time.monotonic()
        self.data.mkdir(parents=True, exist_ok=True)
        (self.workdir / "meta").mkdir(exist_ok=True)
        _, cert, key = make_serving_cert(("127.0.0.1", "localhost")).write(self.workdir)
        self.access_key_id_file.write_text(self.access_key_id + "\n")
        self.secret_access_key_file.write_text(self.secret_access_key + "\n")
        self.port = free_port()
        self._spawn(cert, key)
        self._wait_ready(started + timeout)
        log(f"versitygw ready at {self.endpoint} in {time.monotonic() - started:.2f}s "
            f"(data in {self.data})")
        return self

    def _spawn(self, cert: Path, key: Path) -> None:
        logfile = open(self.workdir / "versitygw.log", "ab")  # noqa: SIM115 - lives with the process
        # The keys go through the environment, not argv (where ps would show them).
        env = {**os.environ, "ROOT_ACCESS_KEY_ID": self.access_key_id,
               "ROOT_SECRET_ACCESS_KEY": self.secret_access_key}
        iam = ["--iam-dir", str(self.workdir / "iam")] if self.iam else []
        if self.iam:
            (self.workdir / "iam").mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [str(self.binary), "--port", f"127.0.0.1:{self.port}", "--region", REGION,
             "--cert", str(cert), "--key", str(key), *iam,
             # Metadata in a directory rather than extended attributes, which tmpfs may lack.
             "posix", "--sidecar", str(self.workdir / "meta"), str(self.data)],
            stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=_set_parent_death_signal)
        logfile.close()  # the child has its own descriptor

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; its data, port and certificate are kept."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, timeout: float = 30.0) -> None:
        """Start the server again (killing it first if it runs) on the same port, data,
        certificate and keys, as after a crash."""
        self.kill()
        self._spawn(self.workdir / "tls.crt", self.workdir / "tls.key")
        self._wait_ready(time.monotonic() + timeout)

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _wait_ready(self, deadline: float) -> None:
        context = self._context()
        last_error = ""
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"versitygw exited with {self.process.returncode}:\n"
                                   f"{(self.workdir / 'versitygw.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.endpoint + "/", context=context, timeout=1).close()
                return
            except urllib.error.HTTPError:  # an S3 error (unsigned request): it is serving
                return
            except OSError as error:
                last_error = str(error)
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"versitygw not ready in time ({last_error}); logs in {self.workdir}")

    def request(self, method: str, bucket: str, key: str = "", body: bytes = b"",
                query: str = "", credentials: tuple[str, str] | None = None) -> int:
        """A signed request (as root, or with `credentials`: (access key id, secret)); returns
        the HTTP status. Raises RuntimeError on an error status."""
        path = "/" + bucket + ("/" + quote(key, safe="/-_.~") if key else "")
        key_id, secret = credentials or (self.access_key_id, self.secret_access_key)
        headers = _sign(method, f"127.0.0.1:{self.port}", path, body, key_id, secret,
                        datetime.now(UTC), query)
        url = self.endpoint + path + (f"?{query}" if query else "")
        req = urllib.request.Request(url, data=body if method in ("PUT", "PATCH") else None,
                                     method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self._context(), timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: HTTP {error.code} "
                               f"{error.read()[:500].decode(errors='replace')}") from None

    def create_bucket(self, bucket: str) -> None:
        self.request("PUT", bucket)

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        self.request("PUT", bucket, key, data)

    def delete_object(self, bucket: str, key: str) -> None:
        self.request("DELETE", bucket, key)

    def read_only_user(self, bucket: str) -> tuple[str, str]:
        """A new account (needs iam=True) that may GET the objects of `bucket` and nothing
        else; returns its (access key id, secret)."""
        assert self.iam, "read_only_user needs S3Server(iam=True)"
        access = "FGRO" + secrets.token_hex(8).upper()
        secret = secrets.token_urlsafe(30)
        account = (f"<Account><Access>{access}</Access><Secret>{secret}</Secret>"
                   "<Role>user</Role><UserID>0</UserID><GroupID>0</GroupID>"
                   "<ProjectID>0</ProjectID></Account>").encode()
        self.request("PATCH", "create-user", body=account)  # versitygw's admin API
        readers = self.readers.setdefault(bucket, [])
        readers.append(access)
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": list(readers)}, "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/*"]}]}
        self.request("PUT", bucket, body=json.dumps(policy).encode(), query="policy=")
        return access, secret


    def read_only_files(self, bucket: str, directory: Path) -> dict[str, str]:
        """A new read-only account (`read_only_user`) as the files a configuration's s3
        section names: accessKeyIdFile and secretAccessKeyFile, written into `directory`."""
        access, secret = self.read_only_user(bucket)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "access-key-id").write_text(access + "\n")
        (directory / "secret-access-key").write_text(secret + "\n")
        return {"accessKeyIdFile": str(directory / "access-key-id"),
                "secretAccessKeyFile": str(directory / "secret-access-key")}

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="build or reuse the versitygw binary; print its path")
    run = sub.add_parser("run", help="start versitygw and run until Ctrl-C")
    run.add_argument("--bucket", action="append", default=[], help="create this bucket")
    args = parser.parse_args()
    if args.command == "install":
        print(install())
        return
    with S3Server() as server:
        for bucket in args.bucket:
            server.create_bucket(bucket)
        print(f"endpoint {server.endpoint}\nca {server.ca_file}\n"
              f"accessKeyIdFile {server.access_key_id_file}\n"
              f"secretAccessKeyFile {server.secret_access_key_file}", flush=True)
        log("running; Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
