"""Fixtures several integration modules share: the publisher as a process and a headless browser."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from playwright.async_api import Browser

from kp.local import LocalStack, ServiceProcess
from tests.browser import launch


@pytest.fixture(scope="module")
def publisher(stack: LocalStack) -> Iterator[ServiceProcess]:
    """The publisher as a process of its own, with its public base URL set (links name where it is reached).
    A module that needs it without one defines its own `publisher`."""
    with stack.running("publisher", public_url=True) as sp:
        yield sp


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless (the modules that use it call `tests.browser.require_browser()`)."""
    async with launch() as b:
        yield b
