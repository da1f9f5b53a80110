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


__all__ = ["RegisteredPorts"]


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
