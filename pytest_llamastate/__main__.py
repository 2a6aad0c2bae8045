"""``python -m pytest_llamastate``: the ``llamastate`` command without the console script."""

from pytest_llamastate.cli.command import main

if __name__ == "__main__":
    raise SystemExit(main())
