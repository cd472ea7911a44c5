"""pytest-mock (3.12 and later) on restask workers.

Compares ``pytest -p restask -n 2`` with the serial run of a suite that uses
the ``mocker`` fixture: patches, ``patch.object``, stubs and spies, some
failing.  Beyond equal counts and JUnit verdicts it checks pytest-mock's own
failure text: a failed ``assert_called_with`` carries the "pytest
introspection follows" diff of the arguments in both runs, and every patch
is undone after its test on the workers as it is in process.
"""

from __future__ import annotations

import pytest

from . import runs

pytestmark = runs.needs("pytest-mock")

SUITE = """
    import os

    import pytest


    class Store:
        def get(self, key):
            return "real " + key


    def shout(text):
        return text.upper()


    def greet(name):
        return "hello " + shout(name)


    def test_patch(mocker):
        mocker.patch("os.getcwd", return_value="/nowhere")
        assert os.getcwd() == "/nowhere"


    def test_patch_is_undone_after_its_test():
        assert os.getcwd() != "/nowhere"


    def test_patch_object(mocker):
        mocker.patch.object(Store, "get", return_value="fake")
        assert Store().get("k") == "fake"


    def test_spy(mocker):
        import test_suite
        spy = mocker.spy(test_suite, "shout")
        assert greet("ann") == "hello ANN"
        spy.assert_called_once_with("ann")
        assert spy.spy_return == "ANN"


    def test_stub(mocker):
        stub = mocker.stub(name="callback")
        stub(1, key="v")
        stub.assert_called_once_with(1, key="v")


    def test_assert_called_fails(mocker):
        stub = mocker.stub(name="never")
        stub.assert_called_once()


    def test_assert_called_with_fails(mocker):
        stub = mocker.stub(name="wrong")
        stub("actual", 1)
        stub.assert_called_with("expected", 2)


    @pytest.mark.parametrize("value", [1, 2, 3])
    def test_resetall(mocker, value):
        mock = mocker.patch("os.getpid", return_value=value)
        assert os.getpid() == value
        mocker.resetall()
        assert mock.call_count == 0
"""


def test_mocker_fixture_reports_the_same_on_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    comparison = runs.compare(pytester)
    runs.assert_same(comparison)
    assert comparison.serial.outcomes == {"passed": 8, "failed": 2}
    for run in comparison.runs():
        # each on its own: failures are listed in the order they happened
        run.result.stdout.fnmatch_lines(["*Expected 'never' to have been called once. Called 0 times.*"])
        run.result.stdout.fnmatch_lines(
            ["*_ test_assert_called_with_fails _*", "*pytest introspection follows:*", "*Args:*"]
        )
