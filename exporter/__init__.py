"""sysinner-exporter: Prometheus exporter and remediation sidecar for sysinner-style app hosts."""

__version__ = "0.1.0"
