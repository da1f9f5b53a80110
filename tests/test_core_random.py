"""Randomized, cycle-accurate differential runs of the core against the reference model
(sim/core_random.py: every answer byte, the full state after every request, every lookup
answer and its exact latency, with random request gaps and response backpressure).

In total the default CI run performs more than 10,000 requests and 100,000 lookups with
fixed seeds, split into independent runs so that ``pytest -n 2`` spreads them:

* four runs of 2,500 requests on small configurations (16 or 8 entries, 4 endpoints, two
  lookup ports);
* a shorter run on the default configuration (64 entries, 8 endpoints);
* variants: write_only_reads with the legacy F_BYPASS feature; BYPASS_CONFIG with
  bypass = 1, a 64 KiB granule, restricted input and domain ranges, sparse endpoint IDs,
  several reserved regions and a tiny table; a feature set without MMIO and PROBE;
* edge configurations: one table entry, one endpoint, 1-bit endpoint IDs, sparse IDs.

Knobs (environment):

* ``VIOMMU_RANDOM_SCALE`` (float, default 1): multiplies every request count (and the
  lookup minimums), e.g. 20 for a long soak run;
* ``VIOMMU_RANDOM_SEED`` (int, default 0): added to every seed.

Each run also checks that its statistics are meaningful (several statuses seen, lookups
both allowed and denied), so that a generator that drifted into trivial stimulus fails.
"""

import os

import pytest

from viommu.rtl.core.layouts import Feature, Status, ResvSubtype
from viommu.rtl.core.params import CoreParams, ResvRegion
from viommu.sim.core_random import run_random
from viommu.sim.model import ALL_FEATURES


SCALE = float(os.environ.get("VIOMMU_RANDOM_SCALE", "1"))
SEED_OFFSET = int(os.environ.get("VIOMMU_RANDOM_SEED", "0"))
#: Below this many requests a run is too short for the statistics checks.
STATS_MIN_REQUESTS = 200


def scaled(n):
    return max(1, round(n * SCALE))


def check_stats(stats, requests, min_lookups, *, expect_statuses, label):
    info = (f"{label}: {stats.requests} requests, {stats.lookups} lookups "
            f"({stats.allowed} allowed), {stats.cycles} cycles, statuses {stats.statuses}")
    print(info)
    assert stats.requests == requests, info
    assert stats.lookups >= min_lookups, info
    assert stats.cycles > 5 * stats.requests, info
    if requests < STATS_MIN_REQUESTS:
        return
    seen = {s for s in stats.statuses if s is not None}
    missing = {int(s) for s in expect_statuses} - seen
    assert not missing, f"{info}: no {sorted(Status(s).name for s in missing)}"
    assert stats.statuses.get(Status.OK, 0) >= requests // 5, info
    # Lookups: a real share allowed, a real share denied.
    assert 0.03 * stats.lookups < stats.allowed < 0.97 * stats.lookups, info


COMMON = (Status.OK, Status.INVAL, Status.RANGE, Status.NOENT)

SMALL_PARAMS = dict(entries=16, endpoints=4, lookup_ports=2)


# --- the bulk: 4 x 2,500 requests, >= 100,000 lookups in total ------------------------------

@pytest.mark.parametrize("seed,entries", [(101, 16), (202, 16), (303, 8), (404, 8)])
def test_random_small_two_ports(seed, entries):
    requests = scaled(2500)
    min_lookups = scaled(25000)          # 4 runs: at least 100,000 lookups
    params = CoreParams(**dict(SMALL_PARAMS, entries=entries))
    stats = run_random(params, seed=seed + SEED_OFFSET, requests=requests,
                       min_lookups=min_lookups)
    expect = COMMON + ((Status.NOMEM,) if entries <= 8 else ())
    check_stats(stats, requests, min_lookups, expect_statuses=expect,
                label=f"small entries={entries} seed {seed + SEED_OFFSET}")


# --- the default configuration ---------------------------------------------------------------

def test_random_default_config():
    requests = scaled(120)
    stats = run_random(CoreParams(), seed=7 + SEED_OFFSET, requests=requests)
    check_stats(stats, requests, 0, expect_statuses=(), label="default")
    if requests >= 100:
        assert {Status.OK, Status.INVAL} <= set(stats.statuses), stats.statuses
        assert 0 < stats.allowed < stats.lookups


# --- variants --------------------------------------------------------------------------------

def test_random_write_only_reads_legacy_bypass():
    """write_only_reads, and F_BYPASS instead of BYPASS_CONFIG: unattached endpoints bypass,
    ATTACH_F_BYPASS is an unknown flag."""
    features = (ALL_FEATURES - {Feature.BYPASS_CONFIG}) | {Feature.BYPASS}
    requests = scaled(600)
    stats = run_random(CoreParams(write_only_reads=True, **SMALL_PARAMS),
                       seed=11 + SEED_OFFSET, requests=requests, features=features)
    check_stats(stats, requests, 0, expect_statuses=COMMON, label="write_only_reads+F_BYPASS")


def test_random_bypass_config_restricted_ranges():
    """BYPASS_CONFIG with bypass = 1, a 64 KiB granule, restricted input/domain ranges,
    sparse endpoint IDs, RESERVED and MSI regions (per endpoint), a tiny table, 3 ports."""
    g = 0x10000
    params = CoreParams(
        entries=3, endpoints=[0, 5, 0x1234], lookup_ports=3,
        page_size_mask=((1 << 64) - 1) & ~(g - 1),
        input_range=(0, (1 << 48) - 1), domain_range=(1, 1000),
        resv_regions={0: [ResvRegion(0x100000, 0x1fffff, ResvSubtype.RESERVED),
                          ResvRegion(0xfee00000, 0xfeefffff, ResvSubtype.MSI)],
                      5: [ResvRegion(0xfee00000, 0xfeefffff, ResvSubtype.MSI)]})
    requests = scaled(600)
    stats = run_random(params, seed=12 + SEED_OFFSET, requests=requests, bypass=1)
    check_stats(stats, requests, 0, expect_statuses=COMMON + (Status.NOMEM,),
                label="bypass_config+ranges")


def test_random_without_mmio_and_probe():
    features = ALL_FEATURES - {Feature.MMIO, Feature.PROBE}
    requests = scaled(400)
    stats = run_random(CoreParams(entries=8, endpoints=3), seed=13 + SEED_OFFSET,
                       requests=requests, features=features)
    check_stats(stats, requests, 0, expect_statuses=COMMON, label="no MMIO/PROBE")
    if requests >= STATS_MIN_REQUESTS:
        assert stats.statuses.get(None, 0) > 0     # PROBEs and unknown types: no answer


def test_scale_knob_defaults():
    """The knobs parse as documented (a typo in CI's environment fails loudly here)."""
    assert SCALE > 0
    assert scaled(2500) >= 1
    if "VIOMMU_RANDOM_SCALE" not in os.environ:
        assert scaled(2500) * 4 >= 10000 and scaled(25000) * 4 >= 100000


# --- edge configurations (cheap: tiny tables) -------------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(entries=1, endpoints=1),
    dict(entries=1, endpoints=2, endpoint_width=1),
    dict(entries=2, endpoints=[1], endpoint_width=1, lookup_ports=2),
    dict(entries=5, endpoints=[0, 7, 9, 200], endpoint_width=8, resv_regions=()),
], ids=["1entry-1ep", "1entry-2eps-width1", "2entries-ep1-2ports", "sparse-ids-no-regions"])
def test_random_edge_configs(kw):
    requests = scaled(300)
    stats = run_random(CoreParams(**kw), seed=21 + SEED_OFFSET, requests=requests)
    check_stats(stats, requests, 0, expect_statuses=COMMON + (Status.NOMEM,),
                label=f"edge {kw}")
