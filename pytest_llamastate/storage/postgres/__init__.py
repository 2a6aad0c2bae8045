"""Stores on Postgres: the parts that know nothing about pytest.

``client`` talks to a Postgres server (URLs, the driver, ``POSTGRES_*`` variables, registry
rows), ``tables`` reads and rewrites a store database's tables, ``janitor`` makes and drops
one database per store, ``server`` provides the server (given by URL, or started for the
run), and ``backend`` gives each store of a session its database.
"""
