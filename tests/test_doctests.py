"""The Examples sections of the public modules run as doctests."""

import doctest
import importlib

import pytest

MODULES = ["edgekm.coreset", "edgekm.datasets", "edgekm._progress"]


def _run(name):
    module = importlib.import_module(name)
    return doctest.testmod(module, verbose=False, report=True)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    failed, attempted = _run(name)
    assert attempted > 0, f"{name} has no examples"
    assert failed == 0


def test_streaming_doctests():
    failed, attempted = _run("edgekm.streaming")
    assert attempted > 0
    assert failed == 0


class _SignOfZeroChecker(doctest.OutputChecker):
    """Treats '-0.' in the output as '0.' (and nothing else)."""

    def check_output(self, want, got, optionflags):
        return super().check_output(want, got.replace("-0.", " 0."), optionflags) or \
            super().check_output(want, got, optionflags)


def test_streaming_examples_pass_up_to_the_sign_of_zero():
    """Apart from the signed zero above, the StreamingKMeans example runs as written."""
    module = importlib.import_module("edgekm.streaming")
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert sum(len(t.examples) for t in tests) > 0
    runner = doctest.DocTestRunner(checker=_SignOfZeroChecker(), verbose=False)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.summarize(verbose=False).failed == 0, "".join(report)
