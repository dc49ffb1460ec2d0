"""Slow clients: a body declared and never sent, a body trickled, headers never finished.

aiohttp waits for a request body as long as the connection stays open, so
every body is read under ``--web.read-timeout``: past it the answer is a 408
and the connection is closed, and nothing is acted on. Headers that never
finish are aiohttp's to bound: it closes the connection once its keep-alive
timeout passes with no complete request. Every test talks raw HTTP over a
real TCP socket to the app wired as ``serve`` wires it.
"""
