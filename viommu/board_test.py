"""``viommu board-test``: the driver flow against a board image, over a serial port.

    viommu board-test --port /dev/ttyUSB0 [--baud 115200] [--requests N] [--seed S]
                      [--timeout S]

Opens the port with pyserial (the ``board`` extra: ``pip install 'viommu[board]'``; any
pyserial URL works too, e.g. ``rfc2217://host:port``), runs
:func:`viommu.sim.host.run_board_test` and prints its summary. Exit status 0 when the
board passed, 1 when it failed (one line saying what went wrong), 2 for a bad argument, a
missing pyserial or a port that cannot be opened.

The test makes about a thousand request/answer round trips (18 KB on the line: ~1.6 s at
115200 baud). USB serial adapters add their own latency to each answer: FTDI chips wait
up to their latency timer (16 ms by default on Linux) before passing a short answer on,
so a run takes ~15-20 s; ``echo 1 > /sys/bus/usb-serial/devices/ttyUSB0/latency_timer``
makes it a few seconds.
"""

import sys


__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Add the ``board-test`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "board-test", help="run the driver flow against a board over a serial port",
        description="Run the Linux-like driver flow (the one the simulation tests use) "
                    "against a board image over its UART: device bring-up, PROBE, ATTACH, "
                    "MAP batches, translation lookups and their fault reports checked "
                    "against the reference model, UNMAP, DETACH, and a DMA outside the "
                    "guest RAM. Needs pyserial (pip install 'viommu[board]').")
    p.add_argument("--port", required=True, metavar="DEV",
                   help="serial port (e.g. /dev/ttyUSB0, COM3) or a pyserial URL")
    p.add_argument("--baud", type=int, default=115200, metavar="BAUD",
                   help="baud rate of the board image's UART (default: 115200)")
    p.add_argument("--requests", type=int, default=16, metavar="N",
                   help="MAP requests to issue (default: 16)")
    p.add_argument("--seed", type=int, default=1, metavar="S",
                   help="seed of the random mappings and lookups (default: 1)")
    p.add_argument("--timeout", type=float, default=1.0, metavar="S",
                   help="serial read timeout in seconds: how long to wait for an answer "
                        "(default: 1.0; must exceed the bridge's 1 ms idle timeout)")
    p.set_defaults(func=run, subparser=p)
    return p


def _error(msg, status):
    print(f"viommu board-test: error: {msg}", file=sys.stderr)
    return status


def run(parser, args):
    """Run the board test; returns the exit status."""
    if args.baud <= 0:
        parser.error(f"--baud must be positive, not {args.baud}")
    if args.requests < 1:
        parser.error(f"--requests must be at least 1, not {args.requests}")
    if not args.timeout > 0:
        parser.error(f"--timeout must be positive, not {args.timeout}")
    try:
        import serial
    except ImportError:
        return _error("board-test needs pyserial: pip install 'viommu[board]'", 2)
    try:
        port = serial.serial_for_url(args.port, baudrate=args.baud, timeout=args.timeout,
                                     write_timeout=max(10.0, args.timeout))
    except (serial.SerialException, ValueError, OSError) as e:
        return _error(f"cannot open {args.port}: {e}", 2)

    from viommu.sim.driver import DriverError
    from viommu.sim.host import BridgeError, run_board_test

    def log(msg):
        print(f"[board-test] {msg}", file=sys.stderr, flush=True)

    try:
        with port:
            summary = run_board_test(port, requests=args.requests, seed=args.seed, log=log)
    except (BridgeError, DriverError, AssertionError, serial.SerialException) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"viommu board-test: FAILED: {first}", file=sys.stderr)
        return 1
    moved = summary["bytes_sent"] + summary["bytes_received"]
    print(f"board-test passed: {summary['requests']} requests, {summary['lookups']} lookups "
          f"({summary['denied']} denied, {summary['faults']} fault reports), "
          f"{summary['frames']} frames / {moved} bytes over the link, "
          f"{summary['board_cycles']} board cycles, {summary['elapsed']:.1f} s")
    return 0
