"""Issue 12's hardening on the real engine: vpc subnets, pulls, integers past the engine's."""
