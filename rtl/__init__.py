"""Amaranth components of the device (the RTL)."""
