"""Where a store's state lives: SQLite files in the store's folder (``sqlite``), or a database
per store on a Postgres server (``postgres``)."""
