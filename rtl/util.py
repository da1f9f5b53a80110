"""Small building blocks shared by the components: checks, multiplexers, encoders, resets."""

from amaranth.hdl import (Const, Signal, Cat, Mux, unsigned, ClockDomain, ClockSignal,
                          DomainRenamer, Instance, ResetInserter)


__all__ = ["check_int", "tree_or", "tree_any", "onehot_mux", "priority_encode", "onehot_encode",
           "ceil_log2", "uge", "component_ports", "reset_inserter", "global_buffer"]


def check_int(name, value, lo, hi, *, power_of_two=False):
    """Raise a clear ``ValueError`` unless ``value`` is an integer (not a bool) in
    ``lo..hi`` (and a power of two if asked); returns ``value``."""
    ok = (isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi and
          (not power_of_two or value & (value - 1) == 0))
    if not ok:
        what = "a power of two" if power_of_two else "an integer"
        raise ValueError(f"{name} must be {what} in {lo}..{hi}, not {value!r}")
    return value


def ceil_log2(n):
    """Bits needed to number ``n`` things (at least 1)."""
    return max(1, (n - 1).bit_length())


def tree_or(values, width):
    """Bitwise OR of ``values`` as a balanced tree (an empty list gives zero)."""
    values = list(values)
    if not values:
        return Const(0, width)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def tree_any(bits):
    """OR-reduction of a list of 1-bit values."""
    return tree_or(bits, 1)


def onehot_mux(selects, values):
    """The value whose select bit is set, as an AND-OR tree (at most one bit may be set;
    none gives 0): ``values`` are cast to ``Value`` (a ``data.View`` gives its bits), all
    of the first one's width. Its depth grows with the log of the list's length, where an
    If/Elif chain of multiplexers is as deep as the list is long."""
    from amaranth.hdl import Value
    values = [Value.cast(v) for v in values]
    width = len(values[0])
    return tree_or([v & s.replicate(width) for s, v in zip(selects, values)], width)


def onehot_encode(onehot, n):
    """Index of the set bit of a one-hot vector of ``n`` bits (0 when none is set)."""
    width = ceil_log2(n)
    return tree_or([Mux(onehot[i], Const(i, width), Const(0, width)) for i in range(n)],
                   width)


def priority_encode(bits, n):
    """``(any, index)`` of the lowest set bit of ``bits`` (``n`` wide), as a balanced tree
    of depth ``log2(n)`` rather than a chain of ``n`` multiplexers."""
    width = ceil_log2(n)
    nodes = [(bits[i], Const(0, 0)) for i in range(n)]   # (any, index bits below this level)
    level = 0
    while len(nodes) > 1:
        merged = []
        for i in range(0, len(nodes), 2):
            if i + 1 == len(nodes):
                lo_any, lo_idx = nodes[i]
                merged.append((lo_any, Cat(lo_idx, Const(0, 1))))
                continue
            (lo_any, lo_idx), (hi_any, hi_idx) = nodes[i], nodes[i + 1]
            merged.append((lo_any | hi_any, Cat(Mux(lo_any, lo_idx, hi_idx), ~lo_any)))
        nodes = merged
        level += 1
    any_, idx = nodes[0]
    return any_, Cat(idx, Const(0, width))[:width]


def component_ports(component):
    """The signals of ``component``'s signature, for ``verilog.convert(ports=...)``.

    Amaranth's converter refuses the ``Const(1)`` that an ``always_ready`` stream has for
    ``ready``; such members are left out (the consumer never stalls).
    """
    from amaranth.hdl import Signal, Value
    ports = []
    for _path, _member, value in component.signature.flatten(component):
        value = Value.cast(value)       # a data.View stands for its underlying signal
        if isinstance(value, Signal):
            ports.append(value)
    return ports


def uge(a, b):
    """Unsigned ``a >= b`` as the borrow of ``a - b``.

    Written this way so that Yosys maps it to a bare carry chain: its comparison
    canonicalization sometimes turns ``>=`` into ``<=`` with an equality term (a 50-LUT
    reduction tree per 52-bit comparator), which a subtraction never gets.
    """
    from amaranth.hdl import Value
    a, b = Value.cast(a), Value.cast(b)
    width = max(len(a), len(b))
    diff = Cat(a, Const(0, width + 1 - len(a))) - Cat(b, Const(0, width + 1 - len(b)))
    return ~diff[width]


def reset_inserter(m, clear, *, alone, name):
    """A transform that resets an elaboratable's ``sync`` logic with ``clear``.

    ``alone=False``: :class:`~amaranth.hdl.ResetInserter` (the logic is reset while
    ``clear`` is high or the domain is in reset; every flip-flop's reset is the OR of the
    two). ``alone=True``: the logic runs in a reset-less domain ``name`` of ``m`` on the
    ``sync`` clock and ``clear`` alone resets it, so the reset net of all its flip-flops
    has ``clear``'s driver as its only source (a flip-flop, which a global buffer can
    carry), not an OR gate. The caller then guarantees that ``clear`` covers the domain's
    reset: for example a flip-flop whose reset value is 1, with a domain reset held for at
    least two cycles.
    """
    if not alone:
        return ResetInserter(clear)
    m.domains += ClockDomain(name, reset_less=True, local=True)
    m.d.comb += ClockSignal(name).eq(ClockSignal("sync"))
    return lambda elaboratable: ResetInserter({name: clear})(
        DomainRenamer({"sync": name})(elaboratable))


def global_buffer(m, platform, signal, *, name):
    """``signal`` through a global clock buffer where the platform has one that can reach
    logic (ECP5: ``DCCA``; nextpnr then routes the net on a global network, which reaches
    every slice's reset and enable pins in about the same time); else ``signal`` itself.
    For a high-fanout net driven by one flip-flop, such as a synchronous reset.

    If the platform has a ``global_buffer_sites`` mapping with an entry for ``name``, the
    buffer is placed there (the ``BEL`` attribute nextpnr honours; the board top levels set
    the mapping, see :mod:`viommu.boards.clocking`)."""
    if getattr(platform, "family", None) != "ecp5":
        return signal
    out = Signal(name=f"{name}_g")
    site = (getattr(platform, "global_buffer_sites", None) or {}).get(name)
    attrs = {} if site is None else {"a_BEL": site}
    m.submodules[f"{name}_gbuf"] = Instance("DCCA", i_CLKI=signal, i_CE=1, o_CLKO=out,
                                            **attrs)
    return out
