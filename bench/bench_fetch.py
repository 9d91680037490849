#!/usr/bin/env python3
"""How fast the verifier sidecar fetches and hashes an artifact, and verifies signatures, beside
OpenSSL on the same machine in the same run.

    .venv/bin/python bench/bench_fetch.py                      # 16 MiB, 256 MiB, 1 GiB
    .venv/bin/python bench/bench_fetch.py --sizes-mib 256 --repeat 5
    .venv/bin/python bench/bench_fetch.py --file /path/to/image.bin --sources file https

For each size (random data in a temporary directory, or --file), best of --repeat runs (page
cache warm after the first):
- `openssl dgst -sha256 FILE`, the bar (1.00x);
- the sidecar's Fetcher on file://, on https:// from `openssl s_server -WWW` over loopback (a
  throwaway CA), and on s3:// from versitygw over loopback TLS (hack/s3server.py, as built by
  hack/setup.sh; left out with a note when it is not installed). Each fetch runs in a fresh child
  process, so its peak RSS is its own; CPU seconds per GiB (user + system, all threads) are shown
  too, as they drift less than wall time on a shared machine, and the server's, over all runs
  (clock ticks: coarse at 16 MiB). On loopback the two share the CPUs: with one core free a
  transfer takes about the sum of the two CPU figures, with two about the larger one;
- for reference, `curl https://... | openssl dgst -sha256` (C download + hash, same server).
FLASHGATE_BENCH_CODE=DIR measures the flashgate package of another checkout (before/after).
Then signature verifications per second, Ed25519 and ES256, by the trust core (the raw signature,
and a whole COSE_Sign1 envelope) beside `openssl speed`.
On loopback the server shares the CPUs with the sidecar; a remote server does not. Figures drift
between machines and runs: compare the ratios of one run. It prints; it never fails on a slow
machine.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))
# FLASHGATE_BENCH_CODE=DIR measures another checkout's flashgate (e.g. `git archive REV`).
sys.path.insert(0, os.environ.get("FLASHGATE_BENCH_CODE") or str(REPO))

MIB = 1 << 20
SOURCES = ("file", "https", "s3")
BUCKET = "bench"


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as file:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 4 * MIB))
            file.write(block)
            remaining -= len(block)


def timed(command: list[str] | str, shell: bool = False) -> float:
    started = time.perf_counter()
    subprocess.run(command, shell=shell, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


# --- the fetch, in a child process ---------------------------------------------------------------

def worker(spec: dict[str, Any]) -> None:
    """One fetch in this (child) process; prints seconds, CPU seconds and peak RSS as JSON."""
    from yarl import URL

    from flashgate.s3 import S3Settings
    from flashgate.verifier_sidecar.fetch import Fetcher, FetchLimits, URLPolicy

    url, size = spec["url"], spec["size"]
    root = Path(url.removeprefix("file://")).resolve().parent if url.startswith("file:") else None
    policy = URLPolicy.make(allow_file=True, file_root=root, allowed_networks=["127.0.0.1/32"])
    s3 = None
    if spec.get("s3"):
        endpoint, key_id_file, secret_file = spec["s3"]
        s3 = S3Settings(URL(endpoint), "us-east-1", access_key_id_file=Path(key_id_file),
                        secret_access_key_file=Path(secret_file))
    ca = spec.get("ca")
    fetcher = Fetcher(policy, FetchLimits(), ca_file=Path(ca) if ca else None, s3=s3)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = asyncio.run(fetcher.fetch(url, size))
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    short = getattr(result, "short", getattr(result, "truncated", False))  # older checkouts
    assert result.size == size and not short and not result.oversized, result
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"seconds": seconds, "cpu": cpu, "sha256": result.sha256.hex(),
                      "maxrss_kib": peak_rss_kib()}))


def peak_rss_kib() -> int:
    """This process's peak RSS: VmHWM, which starts afresh at exec. (ru_maxrss does not on
    Linux: it keeps the forked parent's size, e.g. an object it had just read to upload.)"""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_worker(url: str, size: int, ca: Path | None = None,
               s3: tuple[str, str, str] | None = None) -> dict[str, float]:
    spec = {"url": url, "size": size, "ca": str(ca) if ca else None, "s3": s3}
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], check=True,
                         capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


# --- servers on loopback -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def https_server(directory: Path) -> Iterator[tuple[int, Path, int]]:
    """`openssl s_server -WWW` serving `directory` on a loopback port, with a fresh CA: the port,
    the CA file and the server's process id."""
    from flashgate.operator.tls import make_serving_cert

    ca, crt, key = make_serving_cert(("127.0.0.1",)).write(directory / "tls")
    port = free_port()
    server = subprocess.Popen(["openssl", "s_server", "-quiet", "-WWW", "-accept",
                               f"127.0.0.1:{port}", "-cert", str(crt), "-key", str(key)],
                              cwd=directory, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("openssl s_server did not start")
            time.sleep(0.05)
        yield port, ca, server.pid
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def s3_server() -> Iterator[Any]:
    """versitygw on loopback (hack/s3server.py), or None when it is not installed."""
    import s3server

    if s3server.find() is None:
        yield None
        return
    with s3server.S3Server() as server:
        server.create_bucket(BUCKET)
        yield server


# --- figures -------------------------------------------------------------------------------------

def mib_s(size: int, seconds: float) -> str:
    return f"{size / MIB / seconds:7.0f} MiB/s"


def row(label: str, size: int, seconds: float, bar: float, extra: str = "") -> None:
    print(f"    {label:<34}{mib_s(size, seconds)}  {bar / seconds:5.2f}x  {extra}")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fetch_rows(label: str, url: str, size: int, bar: float, repeat: int,
               server_pid: int | None = None, **worker_args: Any) -> None:
    server_before = process_cpu(server_pid) if server_pid else 0.0
    runs = [run_worker(url, size, **worker_args) for _ in range(repeat)]
    fastest = min(runs, key=lambda r: r["seconds"])
    rss = max(r["maxrss_kib"] for r in runs)
    gib = size / (1 << 30)
    cpu = min(r["cpu"] for r in runs) / gib
    server = ""
    if server_pid:
        used = process_cpu(server_pid) - server_before
        server = f"   server CPU {used / (repeat * gib):5.2f} s/GiB"
    row(label, size, fastest["seconds"], bar,
        f"peak RSS {rss / 1024:4.0f} MiB   CPU {cpu:5.2f} s/GiB{server}")


def bench_size(path: Path, repeat: int, sources: list[str],
               https: tuple[int, Path, int] | None, s3: Any) -> None:
    size = path.stat().st_size
    timed(["openssl", "dgst", "-sha256", str(path)])  # warm the page cache
    bar = min(timed(["openssl", "dgst", "-sha256", str(path)]) for _ in range(repeat))
    print(f"  {size / MIB:.0f} MiB:")
    row("openssl dgst -sha256 FILE", size, bar, bar)
    if "file" in sources:
        fetch_rows("sidecar file://", path.as_uri(), size, bar, repeat)
    if "https" in sources and https is not None:
        https_port, ca, https_pid = https
        url = f"https://127.0.0.1:{https_port}/{path.name}"
        fetch_rows("sidecar https:// (openssl s_server)", url, size, bar, repeat, https_pid,
                   ca=ca)
        if shutil.which("curl"):
            pipe = f"curl -sS --cacert {ca} {url} | openssl dgst -sha256"
            curl = min(timed(pipe, shell=True) for _ in range(repeat))
            row("curl https:// | openssl dgst", size, curl, bar, "(C download + hash)")
    if "s3" in sources and s3 is not None:
        key = f"{path.name}"
        s3.put_object(BUCKET, key, path.read_bytes())  # (the workers' RSS is their own)
        fetch_rows("sidecar s3:// (versitygw, TLS)", f"s3://{BUCKET}/{key}", size, bar, repeat,
                   s3.process.pid, ca=s3.ca_file,
                   s3=(s3.endpoint, str(s3.access_key_id_file), str(s3.secret_access_key_file)))
        s3.delete_object(BUCKET, key)


# --- signatures ----------------------------------------------------------------------------------

def per_second(action: Any, seconds: float = 1.0) -> float:
    count, started = 0, time.perf_counter()
    while True:
        for _ in range(50):
            action()
        count += 50
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return count / elapsed


def openssl_verify_rate(algorithm: str) -> float | None:
    """Verifications/s from `openssl speed` (ed25519 or ecdsap256), or None."""
    done = subprocess.run(["openssl", "speed", "-seconds", "1", algorithm],
                          capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if re.search(r"Ed25519\)|nistp256\)", line):
            numbers = re.findall(r"\d+\.\d+", line)
            return float(numbers[-1]) if numbers else None
    return None


def bench_signatures() -> None:
    from flashgate.signing.filekeys import generate
    from flashgate.trust import CT_RELEASE, Algorithm, parse_sign1, sign1, verify_signature
    from flashgate.trust.cose import to_be_signed, verify_sign1

    print("  signature verifications/s (one core):")
    payload = os.urandom(200)
    for algorithm, openssl_name in ((Algorithm.ED25519, "ed25519"),
                                    (Algorithm.ES256, "ecdsap256")):
        key = generate(algorithm)
        envelope = sign1(key, CT_RELEASE, payload)
        message = parse_sign1(envelope, CT_RELEASE)
        tbs = to_be_signed(message.protected, message.payload)
        raw = per_second(lambda k=key, t=tbs, m=message: verify_signature(
            k.algorithm, k.spki_der, t, m.signature))
        whole = per_second(lambda k=key, e=envelope: verify_sign1(
            parse_sign1(e, CT_RELEASE), k.algorithm, k.spki_der))
        reference = openssl_verify_rate(openssl_name)
        shown = f"{reference:9.0f}" if reference else "        -"
        ratio = f"{raw / reference:5.2f}x" if reference else "     -"
        print(f"    {algorithm!s:<18} openssl speed {shown}   trust.verify_signature "
              f"{raw:8.0f} {ratio}   whole envelope (parse + verify_sign1) {whole:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="an existing file (default: random data)")
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[16, 256, 1024])
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-signatures", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    openssl = subprocess.run(["openssl", "version"], text=True, capture_output=True).stdout
    print(f"flashgate sidecar fetch and verify, best of {args.repeat}; {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, {openssl.strip()}")
    with tempfile.TemporaryDirectory(prefix="flashgate-bench-") as tmp, \
            contextlib.ExitStack() as servers:
        directory = Path(tmp)
        https = (servers.enter_context(https_server(directory))
                 if "https" in args.sources else None)
        s3 = servers.enter_context(s3_server()) if "s3" in args.sources else None
        if "s3" in args.sources and s3 is None:
            print("  (s3:// left out: versitygw is not installed; bash hack/setup.sh builds it)")
        if args.file:
            path = directory / args.file.name
            path.symlink_to(args.file.resolve())
            bench_size(path, args.repeat, args.sources, https, s3)
        else:
            for mib in args.sizes_mib:
                path = directory / f"artifact-{mib}MiB.bin"
                make_file(path, mib * MIB)
                bench_size(path, args.repeat, args.sources, https, s3)
                path.unlink()
    print("  (on loopback the TLS server shares the CPUs with the sidecar; remote servers do not)")
    if not args.no_signatures:
        bench_signatures()


if __name__ == "__main__":
    main()
