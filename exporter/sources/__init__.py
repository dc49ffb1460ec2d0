"""Where per-container stats come from: the engine's API, or the kernel's cgroup files."""
