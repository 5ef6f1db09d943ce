"""``hope bench-suite``: train and compare presets on the benchmark suites.

``protocols`` says how each suite is trained and tested, ``run`` trains and tests the models,
``report`` writes the tables and plots, and ``readout`` is MAD's compression read-out.
"""
