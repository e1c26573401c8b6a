"""The pure core: markets, matching, clocks, events, the replica and its parameters.

No I/O, no trio, no clocks, no randomness: time, keys and peer ids come in as
arguments, so a test can feed events in every order (tests/test_layering.py checks
the imports).
"""
