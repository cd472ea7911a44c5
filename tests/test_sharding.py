"""The ``--shard K/N`` split: parsing, coverage, determinism, balance."""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_restask.resources import Mode, Request, Requirement
from pytest_restask.sharding import (
    SERIAL,
    SHARD_K_RANGE,
    SHARD_N_RANGE,
    SHARD_NOT_NUMBERS,
    SHARD_SYNTAX,
    Shard,
    ShardError,
    ShardTest,
    bound,
    parse_shard,
    split,
)

from .shard_suites import RESOURCE_WORKERS, least_duration, resource_suite, skewed_suite

FREE = Requirement()
ROOT = Path(__file__).resolve().parent.parent


def on(*names: str, mode: Mode = Mode.EXCLUSIVE, serial: bool = False) -> Requirement:
    return Requirement(tuple(Request(name, mode, 1 if mode is Mode.COUNTED else 0) for name in sorted(names)), serial)


def nodeid_sets(tests: Sequence[ShardTest], shards: Sequence[Shard]) -> list[Counter[str]]:
    return [Counter(tests[i].nodeid for i in shard.tests) for shard in shards]


class TestParseShard:
    @pytest.mark.parametrize(
        ("text", "expected"), [("1/4", (1, 4)), ("4/4", (4, 4)), (" 2 / 3 ", (2, 3)), ("1/1", (1, 1))]
    )
    def test_good(self, text: str, expected: tuple[int, int]) -> None:
        assert parse_shard(text) == expected

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("0/4", SHARD_K_RANGE.format(text="0/4", n=4)),
            ("5/4", SHARD_K_RANGE.format(text="5/4", n=4)),
            ("-1/4", SHARD_K_RANGE.format(text="-1/4", n=4)),
            ("a/b", SHARD_NOT_NUMBERS.format(text="a/b")),
            ("1.5/4", SHARD_NOT_NUMBERS.format(text="1.5/4")),
            ("3", SHARD_SYNTAX.format(text="3")),
            ("1/2/3", SHARD_SYNTAX.format(text="1/2/3")),
            ("", SHARD_SYNTAX.format(text="''")),
            ("1/0", SHARD_N_RANGE.format(text="1/0")),
        ],
    )
    def test_bad(self, text: str, message: str) -> None:
        with pytest.raises(ShardError) as info:
            parse_shard(text)
        assert str(info.value) == message
        assert "--shard" in message
        assert "as in --shard 1/" in message

    def test_message_reads_well(self) -> None:
        with pytest.raises(ShardError, match=r"^--shard 5/4: K must be between 1 and N \(here 4\), as in --shard 1/4$"):
            parse_shard("5/4")


class TestBound:
    def test_work_over_workers(self) -> None:
        tests = [ShardTest(f"t{i}", 2.0, FREE) for i in range(4)]
        assert bound(tests, 4) == (2.0, None)
        assert bound(tests, 1) == (8.0, None)
        assert bound([], 3) == (0.0, None)

    def test_exclusive_work_runs_back_to_back(self) -> None:
        tests = [ShardTest("a", 3.0, on("db")), ShardTest("b", 3.0, on("db")), ShardTest("c", 2.0, FREE)]
        assert bound(tests, 4) == (6.0, "db")

    def test_shared_and_counted_work_spread_over_the_workers(self) -> None:
        tests = [
            ShardTest("x", 4.0, on("db")),
            ShardTest("s", 4.0, on("db", mode=Mode.SHARED)),
            ShardTest("c", 4.0, on("db", mode=Mode.COUNTED)),
        ]
        assert bound(tests, 4) == (4.0 + 8.0 / 4, "db")

    def test_serial_tests_are_counted(self) -> None:
        tests = [ShardTest("s", 5.0, Requirement(serial=True)), *(ShardTest(f"f{i}", 1.0, FREE) for i in range(8))]
        assert bound(tests, 4) == (5.0 + 8.0 / 4, SERIAL)
        # with one worker, everything runs back to back anyway
        assert bound(tests, 1) == (13.0, None)

    def test_bottleneck_ties_go_to_the_first_name(self) -> None:
        tests = [ShardTest("a", 2.0, on("port")), ShardTest("b", 2.0, on("db")), ShardTest("c", 1.0, FREE)]
        assert bound(tests, 8) == (2.0, "db")


class TestSplit:
    @pytest.mark.parametrize("shards", range(1, 7))
    def test_every_test_lands_in_exactly_one_shard(self, shards: int) -> None:
        rng = random.Random(shards)
        kinds = [FREE, on("db"), on("db", mode=Mode.SHARED), on("gpu", mode=Mode.COUNTED), Requirement(serial=True)]
        # duplicate node ids, some with equal estimates and needs, some not
        tests = [ShardTest(f"t{rng.randrange(8)}", rng.choice([0.5, 1.0, 2.0]), rng.choice(kinds)) for _ in range(40)]
        result = split(tests, shards, workers=3, global_resources={"staging"})
        assert [shard.index for shard in result] == list(range(1, shards + 1))
        placed = sorted(i for shard in result for i in shard.tests)
        assert placed == list(range(len(tests)))
        for shard in result:
            assert shard.tests == sorted(shard.tests)
            assert (shard.bound, shard.bottleneck) == bound([tests[i] for i in shard.tests], 3)
            assert shard.seconds == pytest.approx(sum(tests[i].seconds for i in shard.tests))

    def test_empty_and_more_shards_than_tests(self) -> None:
        assert [s.tests for s in split([], 3, workers=2)] == [[], [], []]
        tests = [ShardTest("a", 1.0, FREE), ShardTest("b", 2.0, FREE)]
        result = split(tests, 4, workers=2)
        assert sorted(len(s.tests) for s in result) == [0, 0, 1, 1]
        assert [(s.seconds, s.bound, s.bottleneck) for s in result if not s.tests] == [(0.0, 0.0, None)] * 2

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="shards must be at least 1"):
            split([], 0, workers=1)
        with pytest.raises(ValueError, match="workers must be at least 1"):
            split([], 1, workers=0)
        with pytest.raises(ValueError, match="t: estimate must be finite"):
            split([ShardTest("t", float("nan"), FREE)], 1, workers=1)

    def test_the_order_of_the_input_does_not_matter(self) -> None:
        tests = resource_suite(200)
        rng = random.Random(7)
        tests += [ShardTest(t.nodeid, t.seconds, t.requirement) for t in rng.sample(tests, 20)]  # duplicates
        tests += [ShardTest("tests/test_db.py::test_2", 9.0, FREE)]  # a duplicate id, unlike its namesake
        expected = nodeid_sets(tests, split(tests, 4, RESOURCE_WORKERS))
        for _ in range(5):
            shuffled = rng.sample(tests, len(tests))
            assert nodeid_sets(shuffled, split(shuffled, 4, RESOURCE_WORKERS)) == expected

    def test_the_hash_seed_does_not_matter(self) -> None:
        script = textwrap.dedent(
            """
            import json
            from pytest_restask.resources import Mode, Request, Requirement
            from pytest_restask.sharding import ShardTest, split

            names = ["db", "port", "cache", "staging", "lab"]
            tests = [
                ShardTest(
                    f"t{i % 37}",
                    (i * 7919 % 101) / 10,
                    Requirement(tuple(Request(n, Mode(1 + i % 3), 1 if i % 3 == 1 else 0)
                                      for n in sorted({names[i % 5], names[i * 3 % 5]}))),
                )
                for i in range(300)
            ]
            shards = split(tests, 5, 3, global_resources={"staging", "lab"})
            print(json.dumps([sorted(tests[i].nodeid for i in s.tests) for s in shards]))
            """
        )
        outputs = []
        for seed in ("0", "12345"):
            env = {**os.environ, "PYTHONHASHSEED": seed}
            done = subprocess.run(
                [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
            )
            outputs.append(json.loads(done.stdout))
        assert outputs[0] == outputs[1]
        assert sum(len(shard) for shard in outputs[0]) == 300


class TestGlobalResources:
    def test_tests_on_a_global_resource_share_one_shard(self) -> None:
        tests = [ShardTest("s", 1.0, on("staging"))]
        tests += [ShardTest(f"r{i}", 1.0, on("staging", mode=Mode.SHARED)) for i in range(2)]
        tests += [ShardTest(f"d{i}", 1.0, on("db")) for i in range(6)]
        result = split(tests, 3, workers=2, global_resources=["staging"])
        staged = [s.index for s in result for i in s.tests if tests[i].nodeid[0] in "sr"]
        assert len(staged) == 3
        assert len(set(staged)) == 1
        # "db" is not global: each job has its own, so its tests spread, two a shard
        assert sorted(sum(tests[i].nodeid[0] == "d" for i in s.tests) for s in result) == [2, 2, 2]
        # as a non-global resource, "staging" spreads too
        result = split(tests, 3, workers=2)
        assert len({s.index for s in result for i in s.tests if tests[i].nodeid[0] in "sr"}) > 1

    def test_a_test_on_two_global_resources_glues_their_groups(self) -> None:
        tests = [ShardTest(f"a{i}", 1.0, on("staging")) for i in range(4)]
        tests += [ShardTest(f"b{i}", 1.0, on("lab")) for i in range(4)]
        tests += [ShardTest(f"c{i}", 1.0, on("printer")) for i in range(4)]
        tests += [ShardTest(f"f{i}", 1.0, FREE) for i in range(12)]
        apart = split(tests, 3, workers=2, global_resources={"staging", "lab", "printer"})
        shard_of = {tests[i].nodeid: s.index for s in apart for i in s.tests}
        assert shard_of["a0"] != shard_of["b0"]  # apart while nothing glues them
        glued = [*tests, ShardTest("both", 1.0, on("staging", "lab"))]
        result = split(glued, 3, workers=2, global_resources={"staging", "lab", "printer"})
        shard_of = {glued[i].nodeid: s.index for s in result for i in s.tests}
        together = {shard_of[n] for n in shard_of if n[0] in "ab" or n == "both"}
        assert len(together) == 1
        assert shard_of["c0"] not in together


class TestBalance:
    def test_serial_tests_are_spread_by_their_bound(self) -> None:
        # four serial tests of 4 s and 16 free 1 s tests, 4 workers, 2 shards
        tests = [ShardTest(f"s{i}", 4.0, Requirement(serial=True)) for i in range(4)]
        tests += [ShardTest(f"f{i}", 1.0, FREE) for i in range(16)]
        result = split(tests, 2, workers=4)
        assert [sum(tests[i].requirement.serial for i in s.tests) for s in result] == [2, 2]
        assert [(s.bound, s.bottleneck) for s in result] == [(10.0, SERIAL), (10.0, SERIAL)]

    def test_serial_work_outweighs_free_work(self) -> None:
        # a free 6 s test and three serial 2 s tests, 4 workers: by seconds, the free test
        # goes alone and the serial ones together (bound 6); by bound, one serial test
        # joins the free one (bound 2 + 6/4 = 3.5) and the other two run alone (4)
        tests = [ShardTest("free", 6.0, FREE), *(ShardTest(f"s{i}", 2.0, Requirement(serial=True)) for i in range(3))]
        by_seconds = least_duration([t.seconds for t in tests], 2)
        assert max(bound([tests[i] for i in g], 4)[0] for g in by_seconds) == 6.0
        result = split(tests, 2, workers=4)
        assert sorted((s.bound, s.bottleneck) for s in result) == [(3.5, SERIAL), (4.0, SERIAL)]

    @pytest.mark.parametrize("shards", range(2, 9))
    def test_skewed_durations(self, shards: int) -> None:
        tests = skewed_suite()
        total = sum(t.seconds for t in tests)
        assert max(t.seconds for t in tests) > 20 * statistics.median(t.seconds for t in tests)  # skewed indeed
        result = split(tests, shards, workers=4)
        assert max(s.seconds for s in result) <= 1.03 * total / shards

    def test_resources_against_a_duration_only_split(self) -> None:
        """The slowest shard's bound is within 5% of the ideal; a split by seconds alone is well above.

        A duration-only split leaves the "db" work to chance, so how far above
        varies with the suite and grows with N.  Its mean over 8 seeds, in six
        blocks of 8 seeds, was 1.05-1.11x the ideal at N=2, 1.08-1.18x at N=3,
        1.15-1.24x at N=4, 1.23-1.28x at N=5 and 1.24-1.32x at N=6; a single
        seed can come out within 1% at N=2.  The floors sit below the lowest
        block mean.
        """
        floors = {2: 1.03, 3: 1.05, 4: 1.1, 5: 1.2, 6: 1.2}
        ratios: dict[int, list[float]] = {n: [] for n in floors}
        for seed in range(8):
            tests = resource_suite(seed=seed)
            whole, bottleneck = bound(tests, RESOURCE_WORKERS)
            assert bottleneck == "db"
            assert whole > 1.15 * sum(t.seconds for t in tests) / RESOURCE_WORKERS
            for shards in floors:
                ideal = whole / shards
                result = split(tests, shards, RESOURCE_WORKERS)
                assert max(s.bound for s in result) <= 1.05 * ideal
                groups = least_duration([t.seconds for t in tests], shards)
                ratios[shards].append(max(bound([tests[i] for i in g], RESOURCE_WORKERS)[0] for g in groups) / ideal)
        for shards, floor in floors.items():
            assert statistics.mean(ratios[shards]) >= floor, (shards, ratios[shards])

    def test_the_baseline_balances_seconds(self) -> None:
        seconds = [t.seconds for t in skewed_suite()]
        groups = least_duration(seconds, 4)
        assert sorted(i for g in groups for i in g) == list(range(len(seconds)))
        assert max(sum(seconds[i] for i in g) for g in groups) <= 1.03 * sum(seconds) / 4
