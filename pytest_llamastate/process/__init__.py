"""Process lifetime, below every other layer: servers, the zygote, the launcher and the
Postgres watchdog all use ``lifetime``. This folder holds that module alone, so that a
script running in another process can put the folder on ``sys.path`` and import it
without the plugin (and without shadowing any other top-level name)."""
