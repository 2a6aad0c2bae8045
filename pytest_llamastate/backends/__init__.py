"""Storage backends other than SQLite files: the parts that know nothing about pytest.

``postgres`` talks to a Postgres server (URLs, the driver, ``POSTGRES_*`` variables,
registry rows), ``postgres_janitor`` makes and drops one database per store, and
``postgres_server`` provides the server: given by URL, or started for the run.
"""
