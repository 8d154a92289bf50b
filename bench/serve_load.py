"""Load test of ``recplug serve`` on localhost: requests/s and p50/p99 latency, against the in-process Python API.

    python bench/serve_load.py [--ckpt_path CKPT] [--requests 1000] [--concurrency 8] [--workers 1] [--k 20]

Without ``--ckpt_path`` it trains MF for 2 epochs on the embedded default (a temporary folder). It starts
``recplug serve`` in a subprocess (``serving``: a free port, always shut down), sends ``--requests`` requests,
half a known user's top-``k`` and half a new user's top-``k`` from a profile of ``--profile`` random items
(seeded), from ``--concurrency`` threads, each on its own keep-alive HTTP connection, after ``--warmup``
requests. Every answer is checked against the in-process ``Recommender`` (same items). The baseline is the same
requests answered by ``Recommender.recommend`` / ``recommend_profile`` in this process, one at a time. Bounded:
a fixed count, ``--timeout`` seconds per request, ``--deadline`` seconds for the whole load phase.
The last line is ``ratio=<server requests/s / in-process calls/s>``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def train_checkpoint(folder: Path) -> Path:
    """A two-epoch MF checkpoint on the embedded default."""
    from recplug.core.cli.main import main

    code = main(["fit", "--config", str(ROOT / "configs" / "mf.yaml"), "--trainer.max_epochs=2",
                 "--trainer.default_root_dir", str(folder), "--trainer.logger=false",
                 "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    if code != 0:
        sys.exit(code)
    return next(folder.rglob("last.ckpt"))


def make_requests(rec: Any, count: int, k: int, profile: int, seed: int) -> list[dict[str, Any]]:
    """``count`` request bodies, alternating a known user and a new user's random profile."""
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(count):
        if i % 2 == 0:
            bodies.append({"user": rec.user_ids[int(rng.integers(rec.num_users))], "k": k})
        else:
            items = rng.choice(rec.num_items, size=profile, replace=False)
            bodies.append({"items": [rec.item_ids[int(j)] for j in items], "k": k})
    return bodies


def in_process(rec: Any, body: dict[str, Any]) -> list[Any]:
    if "user" in body:
        return rec.recommend([body["user"]], body["k"])[0].items
    return rec.recommend_profile(body["items"], body["k"]).items


class Client:
    """One keep-alive connection per thread to the server."""

    def __init__(self, base: str, timeout: float) -> None:
        self.host, self.port = base.removeprefix("http://").split(":")
        self.timeout, self.local = timeout, threading.local()

    def post(self, body: dict[str, Any]) -> tuple[float, int, Any]:
        """``(seconds, status, decoded answer)`` of one ``POST /predict``."""
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = self.local.connection = http.client.HTTPConnection(self.host, int(self.port),
                                                                            timeout=self.timeout)
        payload = json.dumps(body)
        start = time.perf_counter()
        connection.request("POST", "/predict", payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        return time.perf_counter() - start, response.status, answer


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    return f"p50={np.percentile(ms, 50):.2f}ms p99={np.percentile(ms, 99):.2f}ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", help="checkpoint to serve (default: train MF for 2 epochs on the default)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--profile", type=int, default=5, help="items in a new user's profile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for the whole load phase")
    parser.add_argument("--workers", type=int, default=1, help="LitServe inference workers of the server")
    args = parser.parse_args()

    from recplug import Recommender
    from recplug.core.cli.serve import serving

    with tempfile.TemporaryDirectory(prefix="recplug-serve-load-") as tmp:
        ckpt = Path(args.ckpt_path) if args.ckpt_path else train_checkpoint(Path(tmp))
        rec = Recommender.from_checkpoint(ckpt)
        bodies = make_requests(rec, args.requests, args.k, args.profile, args.seed)
        warm = make_requests(rec, args.warmup, args.k, args.profile, args.seed + 1)

        start = time.perf_counter()
        expected = [in_process(rec, body) for body in bodies]
        baseline_s = time.perf_counter() - start
        baseline_rps = len(bodies) / baseline_s

        with serving(ckpt, "--workers", str(args.workers), log=Path(tmp) / "serve.log") as base:
            client = Client(base, args.timeout)
            for body in warm:
                client.post(body)
            with ThreadPoolExecutor(args.concurrency) as pool:
                start = time.perf_counter()
                futures = [pool.submit(client.post, body) for body in bodies]
                results = [future.result(timeout=max(1.0, args.deadline - (time.perf_counter() - start)))
                           for future in futures]
                wall = time.perf_counter() - start

    failed = [r for r in results if r[1] != 200]
    wrong = sum(r[1] == 200 and r[2]["items"] != items for r, items in zip(results, expected))
    rps = len(bodies) / wall
    known = [r[0] for r, body in zip(results, bodies) if "user" in body]
    new = [r[0] for r, body in zip(results, bodies) if "items" in body]
    print(f"catalogue: {rec.num_users} users x {rec.num_items} items, d={rec.users.shape[1]}; k={args.k}, "
          f"profile={args.profile}; {len(bodies)} requests ({len(known)} known-user, {len(new)} new-user), "
          f"concurrency {args.concurrency}, {args.workers} worker(s)")
    print(f"server: {rps:.1f} requests/s over {wall:.2f}s; all {percentiles(known + new)}; "
          f"known-user {percentiles(known)}; new-user {percentiles(new)}")
    print(f"server answers: {len(failed)} not 200, {wrong} with other items than the Python API "
          f"(mean {statistics.mean(known + new) * 1000:.2f}ms)")
    print(f"in-process Python API (baseline): {baseline_rps:.1f} calls/s ({baseline_s * 1000 / len(bodies):.2f}ms "
          "per call, one at a time)")
    print(f"ratio={rps / baseline_rps:.4f}")


if __name__ == "__main__":
    main()
