"""pytest-django (4.8 and later, Django 4.2 and later) on restask workers.

Compares ``pytest -p restask -n 2`` with the serial run of a small Django
project: a settings module and an app with one model, on a file-backed
SQLite test database, and tests under ``@pytest.mark.django_db`` that create
rows, one that may not touch the database, one failing assertion.  Beyond
equal counts and JUnit verdicts it checks what pytest-django does for xdist
and so must do on restask's workers: its ``django_db_modify_db_settings_xdist_suffix``
fixture reads ``config.workerinput["workerid"]`` and gives each worker a test
database of its own, the configured ``TEST["NAME"]`` with ``_gw0``, ``_gw1``
appended.  Each test records the worker it ran on and the database it used.
"""

from __future__ import annotations

import itertools
import json
import textwrap

import pytest

from . import runs

pytestmark = runs.needs("pytest-django")

INI = """
    [pytest]
    DJANGO_SETTINGS_MODULE = settings
    django_find_project = false
    pythonpath = .
"""

SETTINGS = """
    from pathlib import Path

    BASE = Path(__file__).resolve().parent
    SECRET_KEY = "compat"
    INSTALLED_APPS = ["shop"]
    USE_TZ = True
    DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(BASE / "shop.sqlite3"),
            "TEST": {"NAME": str(BASE / "test_shop.sqlite3")},
        }
    }
"""

MODELS = """
    from django.db import models


    class Item(models.Model):
        name = models.CharField(max_length=50)
"""

CONFTEST = """
    import json
    import os
    import time

    import pytest
    from django.db import connection


    @pytest.fixture
    def record(request):
        \"\"\"Write down the worker and the database this test used, after it ran.\"\"\"
        yield
        worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
        name = connection.settings_dict["NAME"]
        folder = request.config.rootpath / "records"
        folder.mkdir(exist_ok=True)
        path = folder / f"{worker}-{request.node.name}.json"
        path.write_text(json.dumps({"worker": worker, "db": name, "exists": os.path.exists(name)}))


    @pytest.fixture(autouse=True)
    def slow_enough_for_both_workers():
        time.sleep(0.1)
"""

SUITE = """
    import pytest

    from shop.models import Item

    recorded = pytest.mark.usefixtures("record")


    @recorded
    @pytest.mark.django_db
    @pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
    def test_rows_of_one_test_only(count):
        assert Item.objects.count() == 0
        Item.objects.bulk_create(Item(name=f"item{i}") for i in range(count))
        assert Item.objects.count() == count


    @recorded
    @pytest.mark.django_db
    def test_query():
        Item.objects.create(name="pear")
        assert list(Item.objects.values_list("name", flat=True)) == ["pear"]


    @recorded
    @pytest.mark.django_db(transaction=True)
    def test_transactional():
        Item.objects.create(name="plum")
        assert Item.objects.filter(name="plum").exists()


    @recorded
    @pytest.mark.django_db
    def test_fails():
        Item.objects.create(name="fig")
        assert Item.objects.count() == 2


    def test_no_database_access_without_marker():
        Item.objects.count()
"""


def records(pytester: pytest.Pytester) -> list[dict[str, object]]:
    """Return what each test wrote down, in both runs."""
    return [json.loads(path.read_text()) for path in sorted((pytester.path / "records").glob("*.json"))]


def test_each_worker_uses_a_test_database_of_its_own(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(settings=SETTINGS, conftest=CONFTEST, test_suite=SUITE)
    shop = pytester.mkpydir("shop")
    (shop / "models.py").write_text(textwrap.dedent(MODELS))
    comparison = runs.compare(pytester)
    runs.assert_same(comparison)
    assert comparison.serial.outcomes == {"passed": 7, "failed": 2}
    comparison.serial.result.stdout.fnmatch_lines(["*RuntimeError: Database access not allowed*"])

    configured = str(pytester.path / "test_shop.sqlite3")
    databases: dict[str, set[object]] = {}
    tests = {"serial": 0, "parallel": 0}
    for record in records(pytester):
        assert record["exists"], record
        databases.setdefault(str(record["worker"]), set()).add(record["db"])
        tests["serial" if record["worker"] == "master" else "parallel"] += 1
    # the test without database access records nothing
    assert tests == {"serial": 8, "parallel": 8}
    assert databases == {"master": {configured}, "gw0": {f"{configured}_gw0"}, "gw1": {f"{configured}_gw1"}}


DB_FIXTURE_SUITE = """
    import json
    import time

    import pytest

    from shop.models import Item


    @pytest.fixture
    def span(request):
        start = time.time()
        yield
        with open(request.config.rootpath / "spans.jsonl", "a") as f:
            f.write(json.dumps([request.node.name, start, time.time()]) + "\\n")


    @pytest.mark.parametrize("i", range(4))
    def test_db(db, span, i):
        Item.objects.create(name="x")
        time.sleep(0.2)


    @pytest.mark.parametrize("i", range(4))
    def test_free(span, i):
        time.sleep(0.2)
"""


def test_restask_fixtures_declares_pytest_djangos_db_fixture(pytester: pytest.Pytester) -> None:
    """``restask_fixtures`` names a fixture restask's user does not own
    (pytest-django's ``db``): the tests that request it never overlap."""
    pytester.makeini(INI + "    restask_fixtures =\n        db: shop-database\n")
    pytester.makepyfile(settings=SETTINGS, test_suite=DB_FIXTURE_SUITE)
    shop = pytester.mkpydir("shop")
    (shop / "models.py").write_text(textwrap.dedent(MODELS))
    parallel = runs.run(pytester, runs.PARALLEL, workers=runs.WORKERS)
    assert parallel.outcomes == {"passed": 8}, parallel.tail()
    spans = [json.loads(line) for line in (pytester.path / "spans.jsonl").read_text().splitlines()]
    db = [(start, end) for name, start, end in spans if name.startswith("test_db")]
    free = [(start, end) for name, start, end in spans if name.startswith("test_free")]
    assert len(db) == 4
    assert not [(a, b) for a, b in itertools.combinations(db, 2) if a[0] < b[1] and b[0] < a[1]]
    assert [(a, b) for a, b in itertools.product(db, free) if a[0] < b[1] and b[0] < a[1]]  # in parallel
