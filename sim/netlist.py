"""Looking into an elaborated design from a test: the primitive instances it contains."""

from amaranth.hdl import Fragment, Instance


__all__ = ["instances"]


def instances(elaboratable, platform=None, *, type=None):
    """Every :class:`~amaranth.hdl.Instance` in ``elaboratable`` elaborated for
    ``platform``, at any depth; only those of cell type ``type`` if given (e.g. "DCCA")."""
    def walk(fragment):
        for sub, *_ in fragment.subfragments:
            if isinstance(sub, Instance):
                yield sub
            else:
                yield from walk(sub)
    found = walk(Fragment.get(elaboratable, platform))
    return [i for i in found if type is None or i.type == type]
