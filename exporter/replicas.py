"""The host's record of replica instances: ``AppReplicaInstanceList.try_store``."""

from __future__ import annotations

import threading

from exporter.models import AppReplicaInstance
from exporter.naming import DEFAULT_SCHEME, NamingScheme


class AppReplicaInstanceList:
    """A thread-safe map from container name to the newest replica instance seen."""

    def __init__(self, naming: NamingScheme = DEFAULT_SCHEME) -> None:
        self._naming = naming
        self._lock = threading.Lock()
        self._items: dict[str, AppReplicaInstance] = {}

    @property
    def naming(self) -> NamingScheme:
        """Return the naming scheme that makes the container names."""
        return self._naming

    def container_name(self, rep: AppReplicaInstance) -> str:
        """Return the container name of ``rep``; ValueError names the bad part."""
        return self._naming.format(rep.app.id, rep.replica.rep_id)

    def try_store(self, rep: AppReplicaInstance) -> bool:
        """Store ``rep`` when it is new or of a strictly newer revision; True when stored.

        The deployer stores a revision only once its container runs and its
        ``app_instance.json`` is written, so "strictly newer" is measured
        against the revision that was deployed, never one that failed.
        """
        key = self.container_name(rep)
        with self._lock:
            current = self._items.get(key)
            if current is not None and rep.deploy_revision <= current.deploy_revision:
                return False
            self._items[key] = rep
            return True

    def forget(self, name: str, revision: int) -> None:
        """Drop ``name`` if its stored revision is still ``revision`` (undo a failed store)."""
        with self._lock:
            current = self._items.get(name)
            if current is not None and current.deploy_revision == revision:
                del self._items[name]

    def get(self, name: str) -> AppReplicaInstance | None:
        """Return the stored instance for container ``name``, or None."""
        with self._lock:
            return self._items.get(name)

    def snapshot(self) -> dict[str, AppReplicaInstance]:
        """Return a copy of the map, safe to iterate while others store."""
        with self._lock:
            return dict(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
