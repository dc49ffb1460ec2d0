"""Hostile input: oversized, nested, mis-encoded and mis-typed bodies, hostile names and
mounts, bad tokens. Every answer is a clear 4xx, never a 500, and nothing is done to a
container that is not managed.

The app is wired as ``serve`` wires it (the ``api`` fixture) on a driver that
records every mutating call; the real driver's URL building is checked
against the simulated engine, which remembers every request it was sent.
"""
