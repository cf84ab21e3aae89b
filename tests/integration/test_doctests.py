"""The Examples sections of every module, and the ``>>>`` examples of the docs, run as doctests.

Modules are found by walking the ``edgekm`` and ``edgekm.sync`` packages, so a
new module's examples run without being listed here.  A module is skipped only
when it needs an optional dependency (the ``server``, ``dask`` or ``parquet``
extras) that is not installed.
"""

import doctest
import importlib
import inspect
import pkgutil
import re

import pytest

import edgekm
import edgekm.sync
from helpers import ROOT

#: third-party packages of the optional extras: a module that needs a missing one is skipped
OPTIONAL = {"starlette", "uvicorn", "httptools", "uvloop", "scipy", "prometheus_client", "dask",
            "distributed", "pandas", "pyarrow", "sklearn", "httpx", "tomli", "river"}

#: modules whose examples must exist (a module that loses them fails)
MUST_HAVE_EXAMPLES = {"edgekm.coreset", "edgekm.datasets", "edgekm._progress", "edgekm.streaming",
                      "edgekm.assign", "edgekm.filter", "edgekm.sync.device.agent",
                      "edgekm.sync.cloud.aggregator"}

#: public classes without an Examples section today; the list may only shrink
CLASSES_WITHOUT_EXAMPLES = {
    "edgekm.assign.AssignResult",
    "edgekm.dask.DaskFitResult",
    "edgekm.sync.cloud.ingest.Pull",
    "edgekm.sync.cloud.ingest.Upload",
    "edgekm.sync.wire.frame.Frame",
    "edgekm.sync.cloud.metrics.Metrics",
    "edgekm.sync.device.outbox.Outbox",
    "edgekm.sync.device.outbox.PendingFrame",
    "edgekm.sync.device.outbox.RejectedFrame",
    "edgekm.sync.cloud.database.Checkpointer",
    "edgekm.sync.wire.telemetry.TelemetrySummary",
    "edgekm.sync.wire.version.CentroidVersion",
}

#: Markdown files whose ``>>>`` examples run (files without any are fine)
DOCS = sorted([ROOT / "README.md", ROOT / "examples" / "README.md", ROOT / "sync" / "PROTOCOL.md",
               *ROOT.glob("docs/*.md")])
#: docs that must keep runnable examples
DOCS_WITH_EXAMPLES = {"quickstart.md"}


def _module_names():
    names = {"edgekm", "edgekm.sync"}
    for package in (edgekm, edgekm.sync):
        prefix = package.__name__ + "."
        names.update(m.name for m in pkgutil.walk_packages(package.__path__, prefix))
    names.discard("edgekm.__main__")        # importing it runs the command line
    return sorted(names)


MODULES = _module_names()


def _import(name):
    """The module, or a skip when an optional dependency is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        root = (getattr(exc, "name", None) or "").split(".")[0]
        if root in OPTIONAL:
            pytest.skip(f"{name} needs {root}, which is not installed")
        raise


def _run(module, checker=None):
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    runner = doctest.DocTestRunner(checker=checker, verbose=False)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    return runner.summarize(verbose=False), "".join(report)


def test_the_walk_finds_the_modules():
    assert MUST_HAVE_EXAMPLES <= set(MODULES)
    assert {"edgekm.sync.cloud.http.app", "edgekm.sync.cloud.versions", "edgekm.cli"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = _import(name)
    result, report = _run(module)
    assert result.failed == 0, report
    if name in MUST_HAVE_EXAMPLES:
        assert result.attempted > 0, f"{name} has no examples"


class _SignOfZeroChecker(doctest.OutputChecker):
    """Treats '-0.' in the output as '0.' (and nothing else)."""

    def check_output(self, want, got, optionflags):
        return super().check_output(want, got.replace("-0.", " 0."), optionflags) or \
            super().check_output(want, got, optionflags)


def test_streaming_examples_pass_up_to_the_sign_of_zero():
    """Apart from the signed zero above, the StreamingKMeans example runs as written."""
    result, report = _run(importlib.import_module("edgekm.streaming"), _SignOfZeroChecker())
    assert result.attempted > 0
    assert result.failed == 0, report


def _public_classes():
    """``module.Class`` for each public class: in ``__all__``, else defined in the module."""
    found = set()
    for name in MODULES:
        if any(part.startswith("_") for part in name.split(".")):
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue                       # optional dependency missing: nothing to check
        public = getattr(module, "__all__", None)
        if public is None:
            public = [n for n, obj in vars(module).items() if not n.startswith("_")
                      and getattr(obj, "__module__", None) == name]
        for attr in public:
            obj = getattr(module, attr, None)
            if inspect.isclass(obj) and not issubclass(obj, BaseException) \
                    and obj.__module__.startswith("edgekm"):
                found.add((f"{obj.__module__}.{obj.__qualname__}", obj))
    return sorted(found, key=lambda item: item[0])


def test_public_classes_have_examples():
    """Every public class (exceptions aside) has a numpydoc Examples section, or is listed."""
    missing = {name for name, cls in _public_classes()
               if not re.search(r"^Examples\n-{3,}$", inspect.getdoc(cls) or "", re.M)}
    new = sorted(missing - CLASSES_WITHOUT_EXAMPLES)
    assert not new, f"public classes without an Examples section: {new}"


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_docs_examples(path):
    result = doctest.testfile(str(path), module_relative=False, report=False, verbose=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if path.name in DOCS_WITH_EXAMPLES:
        assert result.attempted > 0, f"{path.name} has no runnable examples"


# ---------------------------------------------------------------- the docs match the code

_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_docs_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    broken = [target for target in _LINK.findall(text)
              if "://" not in target and not (path.parent / target).exists()]
    assert not broken, f"{path.name} links to missing files: {broken}"


def test_operations_guide_names_only_real_serve_flags():
    from edgekm.cli import build_parser

    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    real = {opt for action in serve._actions for opt in action.option_strings}
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    table = text[text.index("| flag |"):text.index("`edgekm serve --help`")]
    named = set(re.findall(r"^\| `(--[a-z-]+)", table, re.M))
    assert named and named <= real, f"not flags of edgekm serve: {sorted(named - real)}"
    undocumented = real - named - {"-h", "--help"}
    assert not undocumented, f"serve flags missing from docs/operations.md: {undocumented}"


def test_operations_guide_names_only_real_metrics(tmp_path):
    pytest.importorskip("prometheus_client")
    pytest.importorskip("scipy")
    import time

    import numpy as np

    from edgekm.sync import Aggregator, encode_frame
    from edgekm.sync.cloud.metrics import Metrics

    with Aggregator(tmp_path / "m.db", random_state=0) as agg:
        agg.add_device("d")
        agg.accept("m", "d", encode_frame(model="m", device="d", boot=1, seq=0, span=(0, 9),
                                          points=np.eye(10, 3), weights=np.ones(10), level=0,
                                          created=time.time()))
        metrics = Metrics(agg)
        metrics.frame_result("m", {"status": "accepted"}, 0.01)
        metrics.frame_result("m", {"status": "duplicate"}, 0.01)
        metrics.frame_rejected("conflict", 0.01)
        metrics.telemetry_result("m", "accepted", 1.0)
        metrics.pulls.labels("200").inc()
        metrics.published.labels("m", "http").inc()
        exposed = set(re.findall(r"^# TYPE (\w+)", metrics.render()[0].decode(), re.M))
    exposed |= {name + "_total" for name in exposed}           # counters' sample names
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(edgekm_[a-z_]+)", text))
    assert named and named <= exposed, f"not exposed by /metrics: {sorted(named - exposed)}"
