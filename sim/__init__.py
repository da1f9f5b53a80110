"""Reference model, driver model and testbench helpers."""
