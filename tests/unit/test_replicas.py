from __future__ import annotations

import itertools
import random
import sys
import threading
import time
from typing import Any

import pytest

from exporter.models import AppReplicaInstance
from exporter.naming import NamingScheme
from exporter.replicas import AppReplicaInstanceList

APP = "abc123def456"


def replica(
    revision: int, rep_id: int = 1, app: str = APP, image: str = "local/busybox:latest"
) -> AppReplicaInstance:
    return AppReplicaInstance.model_validate(
        {
            "app": {"id": app, "deploy": {"revision": revision}, "spec": {"image": image}},
            "replica": {"rep_id": rep_id},
        }
    )


def test_absent_is_stored() -> None:
    reps = AppReplicaInstanceList()
    rep = replica(3)
    assert reps.try_store(rep) is True
    assert reps.get("app-abc123def456-0001") is rep
    assert len(reps) == 1


def test_newer_revision_replaces() -> None:
    reps = AppReplicaInstanceList()
    assert reps.try_store(replica(3))
    newer = replica(4)
    assert reps.try_store(newer) is True
    assert reps.get("app-abc123def456-0001") is newer


@pytest.mark.parametrize("revision", [3, 2, 0])
def test_equal_or_older_revision_changes_nothing(revision: int) -> None:
    reps = AppReplicaInstanceList()
    stored = replica(3, image="img:stored")
    assert reps.try_store(stored)
    assert reps.try_store(replica(revision, image="img:other")) is False
    kept = reps.get("app-abc123def456-0001")
    assert kept is stored
    assert kept is not None
    assert kept.app.spec.image == "img:stored"


def test_replicas_are_keyed_separately() -> None:
    reps = AppReplicaInstanceList()
    assert reps.try_store(replica(5, rep_id=1))
    # An older revision of another replica or another app is still new to the list.
    assert reps.try_store(replica(1, rep_id=2))
    assert reps.try_store(replica(1, rep_id=1, app="0123456789ab"))
    assert set(reps.snapshot()) == {
        "app-abc123def456-0001",
        "app-abc123def456-0002",
        "app-0123456789ab-0001",
    }
    assert reps.try_store(replica(5, rep_id=2))
    assert reps.try_store(replica(5, rep_id=1)) is False


def test_container_name_uses_the_scheme() -> None:
    scheme = NamingScheme(
        pattern=r"i8k_(?P<app>[a-z0-9]+)_(?P<replica>[0-9]+)",
        template="i8k_{app}_{replica}",
        replica_base=10,
    )
    reps = AppReplicaInstanceList(scheme)
    rep = replica(1, rep_id=12)
    assert reps.container_name(rep) == "i8k_abc123def456_12"
    assert reps.try_store(rep)
    assert reps.get("i8k_abc123def456_12") is rep


def test_invalid_app_id_is_refused_before_storing() -> None:
    reps = AppReplicaInstanceList()
    with pytest.raises(ValueError, match="app_id"):
        reps.try_store(replica(1, app="NOT-HEX"))
    assert len(reps) == 0


def test_forget_undoes_only_its_own_store() -> None:
    reps = AppReplicaInstanceList()
    assert reps.try_store(replica(1))
    assert reps.try_store(replica(2))
    reps.forget("app-abc123def456-0001", 1)  # a later store won: keep it
    assert reps.get("app-abc123def456-0001") is not None
    reps.forget("app-abc123def456-0001", 2)
    assert reps.get("app-abc123def456-0001") is None
    assert reps.try_store(replica(1))


def test_snapshot_is_a_copy() -> None:
    reps = AppReplicaInstanceList()
    reps.try_store(replica(1))
    snap = reps.snapshot()
    reps.try_store(replica(1, rep_id=2))
    assert len(snap) == 1
    assert len(reps) == 2


class _StoreLog(dict[str, AppReplicaInstance]):
    """A dict that records every store; writes happen under the list's lock, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, int]] = []

    def get(self, key: str, default: Any = None) -> Any:
        value = super().get(key, default)
        time.sleep(0)  # yield between the read and the write: a missing lock would show
        return value

    def __setitem__(self, key: str, value: AppReplicaInstance) -> None:
        self.log.append((key, value.deploy_revision))
        super().__setitem__(key, value)


def test_concurrent_stores_keep_the_newest_and_agree() -> None:
    threads, per_thread = 16, 250
    revisions = list(range(threads * per_thread))
    random.Random(1234).shuffle(revisions)
    chunks = [revisions[i::threads] for i in range(threads)]
    reps = AppReplicaInstanceList()
    store_log = _StoreLog()
    reps._items = store_log  # observe the true order of stores
    results: list[list[tuple[int, int, bool]]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)

    def worker(n: int) -> None:
        start.wait()
        for rev in chunks[n]:
            # Two replicas race side by side: their keys must not interfere.
            rep_id = 1 + rev % 2
            results[n].append((rep_id, rev, reps.try_store(replica(rev, rep_id=rep_id))))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so races would show
    try:
        pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in pool)

    for rep_id in (1, 2):
        key = f"app-abc123def456-{rep_id:04x}"
        mine = [rev for rev in revisions if 1 + rev % 2 == rep_id]
        stored = reps.get(key)
        assert stored is not None
        assert stored.deploy_revision == max(mine)
        won = [rev for r in results for (rid, rev, ok) in r if rid == rep_id and ok]
        chain = [rev for (k, rev) in store_log.log if k == key]
        # Each True is exactly one store, and each store was strictly greater
        # than the one before it.
        assert sorted(won) == sorted(chain)
        assert all(a < b for a, b in itertools.pairwise(chain))
        assert chain[-1] == max(mine)
        # Every False lost to a strictly greater revision that was stored.
        lost = [rev for r in results for (rid, rev, ok) in r if rid == rep_id and not ok]
        assert len(won) + len(lost) == len(mine)
        assert all(rev < chain[-1] for rev in lost)
    assert len(reps) == 2
