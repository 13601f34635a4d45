"""pytest fixtures shared by the integration tests.

- ``pg``: one PostgreSQL per test module (override ``pg_options`` in a
  module to pass ``Postgres`` arguments, e.g. max_connections);
- ``shelf``: one pgshelf per module in front of ``pg``, which must not die
  during the module and must exit 0 on SIGTERM at its end; ``make_shelf``
  starts pgshelfs of a test's own (other upstreams, settings, signals);
- ``target``: parametrised over "direct" and "pgshelf", so every check runs
  against PostgreSQL itself and through pgshelf; ``direct`` is always the
  server itself;
- ``same_as_direct``: runs a producer against the target and asserts that
  its (normalised) output equals what the same producer gets directly.

Set PGSHELF_IT_TARGETS=direct to run only the direct variants (while the
binary does not build). On failure the tails of the logs of every running
server are attached to the report. A run in which no test passed fails,
so a file whose tests were all deselected or skipped cannot look green.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import pytest

from clients import assert_same
from pgshelf_harness import PgShelf, Postgres, find_pgshelf_bin, live_logs, raise_fd_limit, tail

raise_fd_limit()
TARGETS = [t for t in os.environ.get("PGSHELF_IT_TARGETS", "direct,pgshelf").split(",") if t]


@dataclass
class Target:
    """Where a test's clients connect: PostgreSQL itself or pgshelf in front of it."""

    name: str
    endpoint: Postgres | PgShelf
    pg: Postgres

    @property
    def host(self) -> str:
        return self.endpoint.host

    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def is_proxy(self) -> bool:
        return isinstance(self.endpoint, PgShelf)

    def dsn(self, user: str = "postgres", password: str | None = None, dbname: str = "postgres",
            **params: object) -> str:
        return self.endpoint.dsn(user, password, dbname, **params)


@pytest.fixture(scope="module")
def pg_options() -> dict:
    """Keyword arguments for the module's ``Postgres``; override per module."""
    return {}


@pytest.fixture(scope="module")
def pg(pg_options: dict):
    server = Postgres(**pg_options)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pgshelf_bin():
    if "pgshelf" not in TARGETS:
        pytest.skip("PGSHELF_IT_TARGETS excludes pgshelf")
    return find_pgshelf_bin()


@pytest.fixture(scope="module")
def shelf(pg: Postgres, pgshelf_bin):
    """The module's pgshelf; it must survive the module and then shut down cleanly."""
    proxy = PgShelf(pg, binary=pgshelf_bin)
    yield proxy
    crashed = None if proxy.alive() else proxy.proc.returncode
    log = proxy.log_tail()
    code = proxy.stop()
    assert crashed is None, f"pgshelf exited with {crashed} during the tests:\n{log}"
    assert code == 0, f"pgshelf exited with {code} on SIGTERM:\n{log}"


@pytest.fixture
def make_shelf(pg: Postgres, pgshelf_bin):
    """Factory for pgshelfs of the test's own: make_shelf(upstream=pg, **PgShelf arguments).

    Each is stopped after the test, whatever state the test left it in.
    """
    started: list[PgShelf] = []

    def make(upstream: Postgres | str = pg, **kwargs) -> PgShelf:
        started.append(PgShelf(upstream, binary=pgshelf_bin, **kwargs))
        return started[-1]

    yield make
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def direct(pg: Postgres) -> Target:
    return Target("direct", pg, pg)


@pytest.fixture(scope="module", params=TARGETS)
def target(request, pg: Postgres) -> Target:
    if request.param == "direct":
        return Target("direct", pg, pg)
    return Target("pgshelf", request.getfixturevalue("shelf"), pg)


@pytest.fixture(scope="module")
def _direct_outputs() -> dict:
    return {}


@pytest.fixture
def same_as_direct(target: Target, direct: Target, _direct_outputs: dict):
    """check(key, produce, normalise=identity) -> output of produce(target).

    Through pgshelf the normalised output must equal the direct one (taken
    from the direct variant of the same test when it already ran).
    """

    def check(key: str, produce: Callable[[Target], object],
              normalise: Callable[[object], object] = lambda out: out) -> object:
        output = normalise(produce(target))
        if not target.is_proxy:
            _direct_outputs[key] = output
        else:
            if key not in _direct_outputs:
                _direct_outputs[key] = normalise(produce(direct))
            assert_same(output, _direct_outputs[key], key)
        return output

    return check


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, path in live_logs():
            report.sections.append((f"{name} log ({path})", tail(path, 40)))


_passed = 0


def pytest_runtest_logreport(report):
    global _passed
    if report.when == "call" and report.passed:
        _passed += 1


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0 and _passed == 0:
        session.exitstatus = 1
        print("\nERROR: no integration test passed (all skipped or deselected)")
