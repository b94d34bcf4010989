#!/usr/bin/env python3
"""Decode Diameter messages: a hex string, a file of hex, or a pcap/pcapng capture.

    python3 tools/decode.py 0100001c8000010100000000...        # hex
    python3 tools/decode.py capture.pcap --port 3868            # every message in the capture

Prints each message as an indented AVP tree by dictionary name, and any error
the node would answer it with. Same as `ocs decode`.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ocs.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["decode", *sys.argv[1:]]))
