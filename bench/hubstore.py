"""Row 10's hub lines: `doorstep home`'s memory and CPU with a store of many artifacts, against
the same hub on an empty store. The store is written directly, laid out as owner/store.py lays
it out (a signed manifest envelope, ciphertext and an index line per artifact, in one chain),
because receiving 100,000 artifacts over MQTT would take hours."""

from __future__ import annotations

import contextlib
import hashlib
import http.cookiejar
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from doorstep.bench.child import cpu_seconds, doorstep_command
from doorstep.core.errors import DoorstepError
from doorstep.owner.hub.enrol import new_code
from doorstep.protocol.age import X25519Identity
from doorstep.protocol.keys import SigningKey, public_text
from doorstep.protocol.manifest import Chain, sign_manifest

DEVICE = "porch"
KINDS = ("event", "snapshot", "clip")     # a ring or motion event, its snapshot, its clip
CIPHERTEXT = 512                           # bytes per synthetic artifact (the hub never reads it)


def fill_store(root: Path, key: SigningKey, count: int, start: float | None = None) -> None:
    """``count`` artifacts of one doorbell, in one valid chain, one every 30 s up to now."""
    folder = root / DEVICE
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "device.pub").write_text(public_text(key.public_key) + "\n")
    chain = Chain(DEVICE)
    t = start if start is not None else time.time() - 30 * count
    blob = os.urandom(CIPHERTEXT)
    digest = hashlib.sha256(blob).hexdigest()
    lines = []
    for seq in range(1, count + 1):
        kind = KINDS[(seq - 1) % 3]
        created = t + 30 * seq
        m = chain.next(kind, CIPHERTEXT, digest, created=created, clock_synced=True,
                       priority={"event": 1, "snapshot": 2, "clip": 1}[kind],
                       parent=str(seq - 1) if kind == "snapshot" else "")
        stem = f"{seq:010d}.{kind}"
        (folder / f"{stem}.env").write_bytes(sign_manifest(key, m))
        (folder / f"{stem}.age").write_bytes(blob)
        lines.append(json.dumps({"seq": seq, "kind": kind, "file": f"{stem}.age",
                                 "size": CIPHERTEXT, "sha256": digest, "created": created,
                                 "parent": m.parent, "priority": m.priority,
                                 "stored": created + 1}, sort_keys=True))
    (folder / "index.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""))


@dataclass(frozen=True)
class HubRun:
    startup_s: float          # process start -> serving (its URL file written)
    startup_cpu_s: float      # CPU seconds it took to get there
    rss_mb: float             # resident after start-up and the requests
    hwm_mb: float             # peak resident
    devices_ms: float         # GET /api/devices, per request
    timeline_ms: float        # GET /api/timeline (first page of 60), per request
    pages_ms: float           # the whole timeline, 500 at a time, per page
    request_cpu_s: float      # CPU seconds of all the requests above
    idle_cpu_share: float     # CPU seconds per second while nobody asks anything


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise DoorstepError(f"/proc/{pid}/status has no {field}")


class _Client:
    """An enrolled browser's HTTP side, enough to hold a session cookie."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> bytes:
        with self.opener.open(self.url + path, timeout=120) as r:
            return bytes(r.read())

    def post(self, path: str, doc: object) -> bytes:
        req = urllib.request.Request(self.url + path, data=json.dumps(doc).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Origin": self.url}, method="POST")
        with self.opener.open(req, timeout=60) as r:
            return bytes(r.read())


def _timed(fn: object, n: int) -> float:
    assert callable(fn)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) * 1000 / n


def measure_hub(home: Path, device_key: SigningKey, requests: int, idle: float,
                log: Path) -> HubRun:
    """Run `doorstep home --no-mqtt` on ``home`` as a user would, enrol a browser through the
    API, and time what the app asks for when it opens."""
    (home / "hub").mkdir(parents=True, exist_ok=True)
    url_file = home / "hub" / "url"
    url_file.unlink(missing_ok=True)
    argv = [*doorstep_command(), "home", "--home", str(home), "--no-mqtt", "--port", "0",
            "--device", f"{DEVICE}={public_text(device_key.public_key)}"]
    with open(log, "ab") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=out)
        try:
            while not url_file.exists():
                if proc.poll() is not None:
                    raise DoorstepError(f"doorstep home exited {proc.returncode}; see {log}")
                if time.monotonic() - t0 > 300:
                    raise DoorstepError("doorstep home did not start in 300 s")
                time.sleep(0.005)
            startup = time.monotonic() - t0
            startup_cpu = cpu_seconds(proc.pid)
            client = _Client(json.loads(url_file.read_text())["url"])
            code, _ = new_code(home / "hub" / "enrol")
            client.post("/api/enrol", {
                "code": code, "label": "bench",
                "recipient": str(X25519Identity.generate().recipient),
                "key": public_text(SigningKey.generate().public_key)})
            c0 = cpu_seconds(proc.pid)
            devices_ms = _timed(lambda: client.get("/api/devices"), requests)
            timeline_ms = _timed(lambda: client.get("/api/timeline?limit=60"), requests)
            pages = 0
            t = time.perf_counter()
            cursor = None
            while True:
                q = "/api/timeline?limit=500" + (f"&before={cursor}" if cursor else "")
                doc = json.loads(client.get(q))
                pages += 1
                cursor = doc["next"]
                if not cursor:
                    break
            pages_ms = (time.perf_counter() - t) * 1000 / pages
            request_cpu = cpu_seconds(proc.pid) - c0
            i0, m0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(idle)
            idle_share = (cpu_seconds(proc.pid) - i0) / (time.monotonic() - m0)
            rss, hwm = _status_kb(proc.pid, "VmRSS"), _status_kb(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return HubRun(startup, startup_cpu, rss / 1024, hwm / 1024, devices_ms, timeline_ms,
                  pages_ms, request_cpu, idle_share)


def hub_runs(work: Path, count: int, repeats: int, requests: int, idle: float, log: Path
             ) -> tuple[list[HubRun], list[HubRun], float]:
    """The hub on a store of ``count`` artifacts, and on an empty one, ``repeats`` times each
    (alternating); also returns how long writing the store took."""
    key = SigningKey.generate()
    full, empty = work / "hub-full", work / "hub-empty"
    for h in (full, empty):
        shutil.rmtree(h, ignore_errors=True)
    t = time.monotonic()
    fill_store(full / "store", key, count)
    wrote = time.monotonic() - t
    (empty / "store").mkdir(parents=True)
    runs_full, runs_empty = [], []
    for _ in range(repeats):
        runs_full.append(measure_hub(full, key, requests, idle, log))
        runs_empty.append(measure_hub(empty, key, requests, idle, log))
    shutil.rmtree(full, ignore_errors=True)
    return runs_full, runs_empty, wrote


if __name__ == "__main__":     # python -m doorstep.bench.hubstore N: one run, printed
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    f, e, w = hub_runs(Path("bench-out/run"), n, 1, 5, 1.0, Path("/dev/stderr"))
    print(f"wrote {n} in {w:.1f} s\nfull  {f[0]}\nempty {e[0]}")
