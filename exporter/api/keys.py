"""Typed application keys shared by the route modules."""

from __future__ import annotations

from aiohttp import web
from prometheus_client.registry import CollectorRegistry

from exporter.alertpull import AlertPuller
from exporter.config import Settings
from exporter.confinement import MountPolicy
from exporter.drivers.base import Driver
from exporter.naming import NamingScheme
from exporter.remediation import Remediator
from exporter.replica_deploy import ReplicaDeployer
from exporter.snapshot import SnapshotView

SETTINGS = web.AppKey("settings", Settings)
DRIVER = web.AppKey("driver", Driver)
#: The latest poll, read-only; the poller itself is create_app's to run.
POLLER = web.AppKey[SnapshotView]("poller")
REGISTRY = web.AppKey("registry", CollectorRegistry)

# The lifecycle API and remediation (optional collaborators of create_app).
NAMING = web.AppKey("naming", NamingScheme)
MOUNT_POLICY = web.AppKey("mount_policy", MountPolicy)
DEPLOYER = web.AppKey("deployer", ReplicaDeployer)
REMEDIATION = web.AppKey("remediation", Remediator)
ALERT_PULLER = web.AppKey("alert_puller", AlertPuller)
