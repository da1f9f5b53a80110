"""Board top-levels and the FPGA build flow."""
