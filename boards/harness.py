"""Synthesis harness: a component with every port registered, for honest fmax figures.

Out-of-context place and route only times register-to-register paths; a path that starts
at a top-level input (the lookup request feeding the CAM comparators, say) would not be
timed at all. :class:`RegisteredPorts` puts a flip-flop on every input and output of the
wrapped component, so that the figure includes those paths, as it would inside an SoC
where the requester drives the ports from its own flip-flops. The harness is for
measurement only: it delays handshakes, so it is not a usable device.
"""

from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring


__all__ = ["RegisteredPorts", "SerialPorts"]


class RegisteredPorts(wiring.Component):
    """Wrap ``inner`` (a ``wiring.Component``) with a register on each port signal.

    The wrapper's ports are flat signals named after the inner ports' paths
    (``lookup__0__req__valid``...).
    """

    def __init__(self, inner):
        self._inner = inner
        self._pairs = []
        members = {}
        for path, member, value in inner.signature.flatten(inner):
            value = Value.cast(value)
            if not isinstance(value, Signal):
                continue            # constants (always_ready streams)
            name = "__".join(str(p) for p in path)
            members[name] = wiring.In(len(value)) if member.flow == wiring.In \
                else wiring.Out(len(value))
            self._pairs.append((name, member.flow, value))
        super().__init__(members)

    @property
    def harness_ffs(self):
        """Flip-flops the harness itself adds (one per port bit)."""
        return sum(len(value) for _name, _flow, value in self._pairs)

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = self._inner
        for name, flow, inner_value in self._pairs:
            outer = getattr(self, name)
            if flow == wiring.In:
                m.d.sync += inner_value.eq(outer)
            else:
                m.d.sync += outer.eq(inner_value)
        return m


class SerialPorts(wiring.Component):
    """Wrap ``inner`` so that all its port bits travel through three pins.

    For parts that have no out-of-context flow (nextpnr-ice40 needs an I/O pin per port
    bit): every input bit of ``inner`` comes from a register loaded from a shift chain,
    every output bit is captured into a second shift chain, so that the wrapped design is
    timed register to register as inside a SoC, and nothing of it can be optimized away.

    Ports
    -----
    si : In(1)
        Shifted into the input chain every cycle.
    load : In(1)
        Copies the input chain into ``inner``'s input registers and captures ``inner``'s
        outputs into the output chain.
    so : Out(1)
        The output chain's first bit; the chain shifts one bit per cycle when not loading.
    """

    def __init__(self, inner):
        self._inner = inner
        self._ins, self._outs = [], []
        for path, member, value in inner.signature.flatten(inner):
            value = Value.cast(value)
            if not isinstance(value, Signal):
                continue            # constants (always_ready streams)
            (self._ins if member.flow == wiring.In else self._outs).append(value)
        super().__init__({"si": wiring.In(1), "load": wiring.In(1), "so": wiring.Out(1)})

    @property
    def harness_ffs(self):
        """Flip-flops the harness itself adds."""
        return 2 * sum(map(len, self._ins)) + sum(map(len, self._outs))

    def elaborate(self, platform):
        from amaranth.hdl import Cat
        m = Module()
        m.submodules.inner = self._inner
        ins, outs = Cat(*self._ins), Cat(*self._outs)
        chain_in = Signal(len(ins))
        in_regs = Signal(len(ins))
        chain_out = Signal(len(outs))
        m.d.sync += chain_in.eq(Cat(chain_in[1:], self.si))
        m.d.comb += [ins.eq(in_regs), self.so.eq(chain_out[0])]
        with m.If(self.load):
            m.d.sync += [in_regs.eq(chain_in), chain_out.eq(outs)]
        with m.Else():
            m.d.sync += chain_out.eq(chain_out[1:])
        return m
