"""The plugin's install hints name where this copy came from (it is not on PyPI yet)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from pytest_llamastate.releases import LLAMA_STACK, OGX
from pytest_llamastate.releases.install import install_command, requirement

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize(
    ("direct_url", "expected"),
    [
        (None, "pytest-llamastate[stack]"),
        (
            {"url": "file:///home/me/pytest-llamastate", "dir_info": {}},
            "/home/me/pytest-llamastate[stack]",
        ),
        (
            {
                "url": "file:///w/wheels/pytest_llamastate-0.1.0-py3-none-any.whl",
                "archive_info": {},
            },
            "/w/wheels/pytest_llamastate-0.1.0-py3-none-any.whl[stack]",
        ),
        (
            {"url": "https://example.org/x.git", "vcs_info": {"vcs": "git", "commit_id": "abc"}},
            "pytest-llamastate[stack] @ git+https://example.org/x.git@abc",
        ),
        (
            {"url": "https://example.org/p.whl", "archive_info": {}},
            "pytest-llamastate[stack] @ https://example.org/p.whl",
        ),
    ],
    ids=["index", "folder", "wheel", "git", "remote-archive"],
)
def test_the_requirement_follows_the_source(
    direct_url: dict[str, object] | None, expected: str
) -> None:
    assert requirement("stack", direct_url) == expected


def test_this_checkout_is_named_by_its_folder() -> None:
    """The suite's venvs install this clone (editable): a hint names its folder."""
    text = metadata.distribution("pytest-llamastate").read_text("direct_url.json")
    assert text is not None
    assert json.loads(text)["url"].startswith("file://")
    assert install_command("postgres") == f"pip install '{ROOT}[postgres]'"
    assert LLAMA_STACK.install_hint == f"pip install '{ROOT}[stack]'"
    assert OGX.install_hint == f"pip install '{ROOT}[ogx]'"


def test_a_venv_without_a_package_of_its_extras_is_built_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``tested.py check SLUG EXTRAS`` (the Makefile's) names the extras' packages that
    are missing, and only those of the extras asked for."""
    from pytest_llamastate.releases import tested

    requires = [
        "pytest>=8",
        'pytest>=8; extra == "inference"',
        'no-such-package-here>=1; extra == "inference"',
        'another-missing-one; extra == "docs"',
    ]
    monkeypatch.setattr(metadata, "requires", lambda name: requires)
    assert tested.unmet_extras(["postgres", "inference"]) == ["no-such-package-here"]
    assert tested.unmet_extras([]) == []
