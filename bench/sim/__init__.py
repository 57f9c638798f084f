"""A simulation benchmark of response-time promises: ``python -m bench.sim``.

Drives the real ``bot.eta`` code (calendar and targets from support.yml) through a
simulated week of customers and agents and compares FirstReply's calibrated promise with
the formula alone, a fixed "within 1 hour" and the trailing 7-day median. Not a test;
``tests/test_sim.py`` checks the simulator's bookkeeping on a tiny scenario.
"""
