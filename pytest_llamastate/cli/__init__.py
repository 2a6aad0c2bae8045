"""The ``llamastate`` command: list, show, reset and remove stores, reading them through
``state`` and ``storage`` (``command``), and inspecting a store's files for it
(``inspection``)."""
