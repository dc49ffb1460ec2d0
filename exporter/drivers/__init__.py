"""Container-runtime drivers behind the :class:`~exporter.drivers.base.Driver` Protocol."""
