"""Record tests/data/cgroup/v1 from the real engine (cgroup v1, cgroupfs driver).

Run from the repo root: ``.venv/bin/python tests/data/cgroup/record_v1.py``.
It starts one busybox container with a write throttle (so the kernel fills
the blkio throttle files), lets it write with O_DIRECT, read back, write
1 MiB through the page cache, ping the bridge and burn a little CPU, waits
until its counters stop moving, then copies the files the cgroup source
reads and the engine's own one-shot stats answer, and checks the files did
not change across the engine call (but for the idle cgroup's few us of CPU).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import docker

HERE = Path(__file__).resolve().parent / "v1"
CGROUP = Path("/sys/fs/cgroup")
FILES = {
    "cpuacct": ("cpuacct.usage", "cpuacct.stat"),
    "cpu": ("cpu.stat",),
    "memory": (
        "memory.usage_in_bytes",
        "memory.stat",
        "memory.max_usage_in_bytes",
        "memory.failcnt",
        "memory.oom_control",
    ),
    "blkio": (
        "blkio.throttle.io_service_bytes_recursive",
        "blkio.throttle.io_serviced_recursive",
    ),
}
WORK = (
    "dd if=/dev/zero of=/tmp/f bs=64k count=64 oflag=direct 2>/dev/null;"
    "dd if=/tmp/f of=/dev/null bs=64k iflag=direct 2>/dev/null;"
    "dd if=/dev/zero of=/tmp/cached bs=64k count=16 2>/dev/null;"
    "ping -c 5 -i 0.2 -q 172.17.0.1 >/dev/null;"
    "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done;"
    "exec sleep 100000"
)


def root_device() -> str:
    """Return /dev/NAME of the disk that holds /var/lib/docker."""
    dev = os.stat("/var/lib/docker").st_dev
    name = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve().name
    return f"/dev/{name}"


def snapshot(pid: int, cid: str) -> dict[str, bytes]:
    files = {
        f"proc/{pid}/cgroup": Path(f"/proc/{pid}/cgroup").read_bytes(),
        f"proc/{pid}/net/dev": Path(f"/proc/{pid}/net/dev").read_bytes(),
    }
    for controller, names in FILES.items():
        for name in names:
            rel = f"sys/fs/cgroup/{controller}/docker/{cid}/{name}"
            files[rel] = (CGROUP / controller / "docker" / cid / name).read_bytes()
    return files


def main() -> int:
    client = docker.from_env()
    container = client.containers.run(
        "local/busybox:latest",
        ["/bin/sh", "-c", WORK],
        detach=True,
        init=True,
        device_write_bps=[{"Path": root_device(), "Rate": 100 * 1024 * 1024}],
    )
    try:
        container.reload()
        pid, cid = int(container.attrs["State"]["Pid"]), container.id
        usage = CGROUP / "cpuacct" / "docker" / cid / "cpuacct.usage"
        # Idle is not zero: the kernel charges an idle cgroup some us per second.
        deadline = time.monotonic() + 60
        while True:
            first = int(usage.read_text())
            time.sleep(1)
            if int(usage.read_text()) - first < 1_000_000:
                break
            if time.monotonic() > deadline:
                print("the container never went idle; nothing recorded", file=sys.stderr)
                return 1
        for _ in range(10):
            before = snapshot(pid, cid)
            engine = container.stats(stream=False, one_shot=True)
            after = snapshot(pid, cid)
            if all(after[k] == v for k, v in before.items() if not k.endswith("cpuacct.usage")):
                break
        else:
            print("counters kept moving; nothing recorded", file=sys.stderr)
            return 1
        shutil.rmtree(HERE, ignore_errors=True)
        for rel, data in before.items():
            path = HERE / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        # This machine hides /proc/1/ns from root; the recorder's own netns is the host's.
        for p, source in ((pid, f"/proc/{pid}/ns/net"), (1, "/proc/self/ns/net")):
            ns = HERE / f"proc/{p}/ns/net"
            ns.parent.mkdir(parents=True, exist_ok=True)
            ns.symlink_to(os.readlink(source))
        (HERE / "proc/self").mkdir(parents=True, exist_ok=True)
        (HERE / "proc/self/cgroup").write_bytes(Path("/proc/1/cgroup").read_bytes())
        container_doc = {"id": cid, "pid": pid, "name": container.name}
        (HERE / "container.json").write_text(json.dumps(container_doc, indent=2) + "\n")
        (HERE / "engine_stats.json").write_text(json.dumps(engine, indent=2) + "\n")
        print(f"recorded {cid[:12]} (pid {pid}) into {HERE}")
        return 0
    finally:
        container.remove(force=True)


if __name__ == "__main__":
    sys.exit(main())
