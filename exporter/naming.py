"""Container names: ``app-{appId}-{replicaId:04x}``, its parser and validator.

The host manages exactly the containers whose name matches the pattern; every
other container is never tracked or touched. Upstream has changed the format
before, so the pattern and template are configurable through
:class:`NamingScheme`; the default is the seed's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

#: The seed's validator (``ContainerNameValid``), with named groups added.
DEFAULT_PATTERN = r"app-(?P<app>[a-f0-9]{8,16})-(?P<replica>[0-9a-f]{4})"
#: The seed's ``ContainerName`` format.
DEFAULT_TEMPLATE = "app-{app}-{replica:04x}"


class ParsedName(NamedTuple):
    """An app id and a replica number read back from a container name."""

    app: str
    replica: int


@dataclass(frozen=True)
class NamingScheme:
    """A container-name pattern with groups ``app`` and ``replica``, and its template.

    ``replica_base`` is the base the replica group is written in (16 in the
    seed; upstream later used decimal).
    """

    pattern: str = DEFAULT_PATTERN
    template: str = DEFAULT_TEMPLATE
    replica_base: int = 16
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            regex = re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"naming pattern: not a regular expression: {e}") from e
        missing = {"app", "replica"} - set(regex.groupindex)
        if missing:
            raise ValueError(f"naming pattern: missing named group(s) {sorted(missing)}")
        if self.replica_base not in (10, 16):
            raise ValueError("naming replica_base: must be 10 or 16")
        object.__setattr__(self, "_regex", regex)

    def is_valid(self, name: str) -> bool:
        """Return True when ``name`` matches the whole pattern, nothing before or after."""
        # fullmatch, not match with "$": "$" also matches before a trailing newline.
        return self._regex.fullmatch(name) is not None

    def parse(self, name: str) -> ParsedName | None:
        """Return the app id and replica number of a managed name, or None."""
        m = self._regex.fullmatch(name)
        if m is None:
            return None
        try:
            replica = int(m.group("replica"), self.replica_base)
        except ValueError:
            return None
        return ParsedName(m.group("app"), replica)

    def format(self, app_id: str, replica_id: int) -> str:
        """Return the container name of a replica; ValueError names the bad part."""
        if not isinstance(replica_id, int) or isinstance(replica_id, bool) or replica_id < 0:
            raise ValueError(f"replica_id: must be a non-negative integer, got {replica_id!r}")
        name = self.template.format(app=app_id, replica=replica_id)
        parsed = self.parse(name)
        if parsed is None:
            # Tell the caller which part is at fault: check the app id with a
            # replica we know is fine, then the other way round.
            if self.parse(self.template.format(app=app_id, replica=0)) is None:
                raise ValueError(f"app_id: {app_id!r} does not make a valid container name")
            raise ValueError(f"replica_id: {replica_id} does not make a valid container name")
        if parsed != (app_id, replica_id):
            # e.g. an app id with upper-case hex would format but parse back differently.
            raise ValueError(f"app_id: {app_id!r} does not round-trip through {name!r}")
        return name


DEFAULT_SCHEME = NamingScheme()


def container_name(app_id: str, replica_id: int) -> str:
    """Return ``app-{app_id}-{replica_id:04x}``; ValueError names the bad part."""
    return DEFAULT_SCHEME.format(app_id, replica_id)


def parse_container_name(name: str) -> ParsedName | None:
    """Return (app, replica) of a name in the default format, or None."""
    return DEFAULT_SCHEME.parse(name)


def is_valid_container_name(name: str) -> bool:
    """Return True when ``name`` is in the default format (the seed's ContainerNameValid)."""
    return DEFAULT_SCHEME.is_valid(name)


_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def sanitize_label_name(key: str) -> str:
    """Return a valid Prometheus label name for a Docker label key (``label_`` prefixed)."""
    return "label_" + _INVALID_LABEL_CHARS.sub("_", key)
