#!/usr/bin/env python3
"""How fast the verifier sidecar hashes an artifact, vs `openssl dgst -sha256` on the same file.

    .venv/bin/python bench/bench_fetch.py                 # 1 GiB of random data in a temp dir
    .venv/bin/python bench/bench_fetch.py --size-mib 256 --repeat 5
    .venv/bin/python bench/bench_fetch.py --file /path/to/image.bin

It prints, best of --repeat runs each (page cache warm after the first):
- `openssl dgst -sha256 FILE` (the bar of docs/performance notes: file:// should reach >= 0.9x);
- the sidecar's Fetcher on file:// and on https:// over loopback (served by `openssl s_server
  -WWW` in its own process, with a throwaway CA), each run in a fresh child process so its peak
  RSS is its own; the peak RSS is also shown for a small file, to show that memory stays flat;
- for reference, `curl https://... | openssl dgst -sha256` (C download + hash) when curl exists.
Figures drift between machines: compare the ratios of one run. It prints; it does not assert.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MIB = 1 << 20


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as file:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 4 * MIB))
            file.write(block)
            remaining -= len(block)


def best(seconds: list[float]) -> float:
    return min(seconds)


def timed(command: list[str] | str, shell: bool = False) -> float:
    started = time.perf_counter()
    subprocess.run(command, shell=shell, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def worker(url: str, size: int, ca: str | None) -> None:
    """One fetch in this (child) process; prints seconds, digest and peak RSS as JSON."""
    from flashgate.verifier_sidecar.fetch import Fetcher, FetchLimits, URLPolicy

    root = Path(url.removeprefix("file://")).resolve().parent if url.startswith("file:") else None
    policy = URLPolicy.make(allow_file=True, file_root=root, allowed_networks=["127.0.0.1/32"])
    fetcher = Fetcher(policy, FetchLimits(), ca_file=Path(ca) if ca else None)
    started = time.perf_counter()
    result = asyncio.run(fetcher.fetch(url, size))
    seconds = time.perf_counter() - started
    assert result.size == size and not result.short and not result.oversized, result
    print(json.dumps({"seconds": seconds, "sha256": result.sha256.hex(),
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def run_worker(url: str, size: int, ca: Path | None = None) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", url, "--worker-size", str(size)]
    if ca is not None:
        command += ["--worker-ca", str(ca)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def https_server(directory: Path) -> Iterator[tuple[int, Path]]:
    """`openssl s_server -WWW` serving `directory` on a loopback port, with a fresh CA."""
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
        yield port, ca
    finally:
        server.terminate()
        server.wait(10)


def mib_s(size: int, seconds: float) -> str:
    return f"{size / MIB / seconds:8.0f} MiB/s"


def bench(path: Path, repeat: int) -> None:
    size = path.stat().st_size
    small = path.parent / "small.bin"
    make_file(small, 16 * MIB)
    print(f"artifact: {path} ({size / MIB:.0f} MiB), best of {repeat}; "
          f"{os.cpu_count()} CPUs, {sys.version.split()[0]}")
    timed(["openssl", "dgst", "-sha256", str(path)])  # warm the page cache
    openssl = best([timed(["openssl", "dgst", "-sha256", str(path)]) for _ in range(repeat)])
    print(f"  openssl dgst -sha256 FILE            {mib_s(size, openssl)}   1.00x")

    runs = [run_worker(path.as_uri(), size) for _ in range(repeat)]
    seconds = best([r["seconds"] for r in runs])
    rss = max(r["maxrss_kib"] for r in runs)
    small_rss = run_worker(small.as_uri(), 16 * MIB)["maxrss_kib"]
    print(f"  sidecar file://                      {mib_s(size, seconds)}   "
          f"{openssl / seconds:.2f}x   peak RSS {rss / 1024:.0f} MiB "
          f"(16 MiB file: {small_rss / 1024:.0f} MiB)")

    if shutil.which("openssl") is None:
        return
    with https_server(path.parent) as (port, ca):
        url = f"https://127.0.0.1:{port}/{path.name}"
        runs = [run_worker(url, size, ca) for _ in range(repeat)]
        seconds = best([r["seconds"] for r in runs])
        rss = max(r["maxrss_kib"] for r in runs)
        small_rss = run_worker(f"https://127.0.0.1:{port}/{small.name}", 16 * MIB,
                               ca)["maxrss_kib"]
        print(f"  sidecar https:// (loopback)          {mib_s(size, seconds)}   "
              f"{openssl / seconds:.2f}x   peak RSS {rss / 1024:.0f} MiB "
              f"(16 MiB file: {small_rss / 1024:.0f} MiB)")
        if shutil.which("curl"):
            pipe = f"curl -sS --cacert {ca} {url} | openssl dgst -sha256"
            curl = best([timed(pipe, shell=True) for _ in range(repeat)])
            print(f"  curl https:// | openssl dgst         {mib_s(size, curl)}   "
                  f"{openssl / curl:.2f}x   (reference: C download + hash, same server)")
    print("  (https on loopback shares the CPUs with the TLS server; remote servers do not)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="an existing file (default: random data)")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-ca", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.worker_size, args.worker_ca)
        return
    with tempfile.TemporaryDirectory(prefix="flashgate-bench-") as tmp:
        if args.file:
            path = Path(tmp) / args.file.name
            path.symlink_to(args.file.resolve())
        else:
            path = Path(tmp) / "artifact.bin"
            make_file(path, args.size_mib * MIB)
        bench(path, args.repeat)


if __name__ == "__main__":
    main()
