"""The only code that imports pytest: hooks, fixtures, options and their ini twins, markers,
session state, reports, hookspecs.

``hooks`` is the module pytest loads (the ``pytest11`` entry point); it imports the fixtures
so pytest finds them there. Nothing below this folder knows pytest exists.
"""
