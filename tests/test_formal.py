"""Formal verification of the device core's security properties (SymbiYosys, Yices).

Every property set of :class:`viommu.rtl.core.formal.CoreFormal` is proven by k-induction
(``mode prove``, k = 6: an unbounded proof, valid in every reachable state, not only in
the first k cycles) on the small configuration of :func:`~viommu.rtl.core.formal.small_params`
(2 mapping entries, endpoints 0 and 1 out of a 2-bit ID space, one lookup port, 4 KiB
granule, full 64-bit addresses, 32-bit domain IDs, the x86 MSI region). Every input of the
core (request and response streams, lookups, features, ``bypass``, ``clear``) is free in
every cycle: there is no ``Assume``.

Then checks that the proofs mean something: covers (a lookup granted through a MAP'd
entry, a request answered RANGE) must be reachable from reset, and two deliberately broken
cores must make their property fail with a real counterexample from reset.

Run: ``make formal`` or ``pytest tests/test_formal.py`` (about 2.5 minutes of CPU; 4-5
minutes of wall time on 2 busy cores with ``-n 2``), or one property with
``python -m viommu.sim.formal lookup --depth 6`` (``--help`` for the options).
"""

import pytest

from viommu.rtl.core.formal import CoreFormal, small_params
from viommu.rtl.core.layouts import LookupVia
from viommu.sim.formal import run_sby, read_vcd


#: Induction length of the proofs. Each property closes with a smaller k (overlap and the
#: invariants at 3, lookup at 4, unchanged at 5); 6 leaves a margin for RTL changes that
#: lengthen a path, at little cost.
PROVE_DEPTH = 6


def _prove(prop, tmp_path, depth=PROVE_DEPTH):
    res = run_sby(prop, small_params(), depth, "prove", tmp_path)
    assert res.passed, f"{prop} not proven:\n{res.summary()}"
    return res


def test_harness_rejects_unknown_names():
    with pytest.raises(ValueError):
        CoreFormal(small_params(), "nonsense")
    with pytest.raises(ValueError):
        CoreFormal(small_params(), "lookup", mutation="nonsense")


@pytest.mark.slow
def test_prove_no_overlap(tmp_path):
    """Property 2 on its own: no two valid entries of one domain slot overlap, and every
    valid entry has start <= end (k-induction)."""
    _prove("overlap", tmp_path)


@pytest.mark.slow
def test_prove_invariants(tmp_path):
    """Property 2 plus the structural invariants I3..I7: no entry of a dead or bypass
    domain (a leaked mapping), no wrapping physical range, attached endpoints point at live
    domains with the right bypass copy, live domains have an endpoint, domain IDs are
    unique (k-induction)."""
    _prove("invariants", tmp_path)


@pytest.mark.slow
def test_prove_lookup_soundness(tmp_path):
    """Property 1: every granted lookup is justified by the state of the cycle it was
    presented in (mapping with permission and the right phys/mmio, bypass, or MSI write),
    its response comes exactly 3 cycles later and echoes it (k-induction)."""
    _prove("lookup", tmp_path)


@pytest.mark.slow
def test_prove_failed_requests_change_nothing(tmp_path):
    """Property 3: a request answered with a non-OK status (UNMAP RANGE among them) or with
    nothing leaves entries, endpoints and domains as they were when its last beat came in;
    so does a PROBE (k-induction)."""
    _prove("unchanged", tmp_path)


@pytest.mark.slow
def test_prove_ordering_contract(tmp_path):
    """Ordering contract item 2: no state change that can remove access happens in the
    cycle a response is valid or the two before it, so no lookup response delivered from
    then on can reflect the old state (k-induction)."""
    _prove("ordering", tmp_path)


@pytest.mark.slow
def test_covers_are_reachable(tmp_path):
    """The proofs are not vacuous: from reset the core attaches an endpoint, maps a range
    and grants a lookup through it via MAPPING (22 cycles), and a request is answered RANGE
    as the ``unchanged`` harness decodes the status byte. Steps before 19 are not searched
    (``skip``), which saves solver time; both covers are reachable from 19 on."""
    res = run_sby("cover", small_params(), 25, "cover", tmp_path, skip=19)
    assert res.passed, f"a cover is unreachable:\n{res.summary()}"
    assert len(res.traces) == 2


@pytest.mark.slow
def test_lookup_property_catches_missing_domain_check(tmp_path):
    """Mutation: a lookup port that ignores domain slots must violate lookup soundness.

    The search is a cover of "some lookup check fails" (``hunt``), in cover mode from
    reset: sby PASS means a counterexample was found. The shortest one takes about 29
    cycles (ATTACH endpoint 0 to domain A, MAP a range into A, ATTACH endpoint 1 to domain
    B, then endpoint 1's lookup of A's range is granted via MAPPING), so steps before 27
    are not searched (``skip``): checking each of them costs far more solver time than the
    one that finds the trace."""
    res = run_sby("lookup", small_params(), 31, "cover", tmp_path, mutation="no_domain_check",
                  hunt=True, skip=27, verbose=False)
    assert res.passed, f"no counterexample found for the mutant:\n{res.summary()}"
    trace = read_vcd(res.traces[0])
    last = len(trace["core_formal.clk"]) - 1
    resp = "core_formal.core.lookup0.resp__payload"
    assert trace["core_formal.core.lookup0.resp__valid"][last] == 1
    assert trace[f"{resp}.allowed"][last] == 1
    assert trace[f"{resp}.via"][last] == LookupVia.MAPPING.value


@pytest.mark.slow
def test_ordering_property_catches_short_wait(tmp_path):
    """Mutation: an executor that answers ATTACH/DETACH/UNMAP 1 cycle after applying them
    (instead of 3) must violate the ordering contract. BMC from reset finds it at step 7
    (an ATTACH: 3 beats, decode, check, apply, 1 wait cycle, response)."""
    res = run_sby("ordering", small_params(), 12, "bmc", tmp_path, mutation="short_wait",
                  verbose=False)
    assert res.status == "FAIL", res.summary()
    assert any("access removed less than 3 cycles" in line for line in res.failed_asserts), \
        res.summary()


# --- with a mapping store: its answers free --------------------------------------------------

#: The formal configuration with a mapping store of 4 mappings; the store itself is not
#: built: its every answer, and when it takes an operation, are free inputs.
def _store_params():
    return small_params(mappings=4)


@pytest.mark.slow
@pytest.mark.parametrize("prop", ["invariants", "lookup", "unchanged", "ordering"])
def test_prove_with_store(prop, tmp_path):
    """The properties above, proven (k-induction) for the core whose table is a cache of a
    store that may answer anything at any time: a fill never installs an entry that breaks
    the invariants (overlap, dead or bypass domain, wrapping range), no lookup is granted
    what no valid entry allows, failed requests change nothing, and removals answer only
    once lookups see them."""
    res = run_sby(prop, _store_params(), PROVE_DEPTH, "prove", tmp_path, verbose=False)
    assert res.passed, f"{prop} with a store not proven:\n{res.summary()}"


@pytest.mark.slow
def test_invariants_catch_unchecked_fill(tmp_path):
    """Mutation: a fill that installs whatever record the store answers must break the
    invariants. The shortest counterexample from reset is 19 cycles (ATTACH, a lookup's
    miss, a fill of a record of another slot or with a wrapping range), so steps before 17
    are not searched."""
    res = run_sby("invariants", _store_params(), 20, "cover", tmp_path,
                  mutation="unchecked_fill", hunt=True, skip=17, verbose=False)
    assert res.passed, f"no counterexample found for the mutant:\n{res.summary()}"
    trace = read_vcd(res.traces[0])
    states = trace["core_formal.core.executor.fsm_state"]
    assert len(set(states)) > 5, states        # through a request and a fill
