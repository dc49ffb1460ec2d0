"""What the tests share that is not a fixture: helpers, harnesses, constants.

Fixtures live in the conftest files; everything they and the tests call lives here.
"""
