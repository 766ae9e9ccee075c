#!/usr/bin/env python
"""Same as `python -m tdsclip.benchmark`: cost of a configured TDS-CLIP (see its --help)."""

from tdsclip.benchmark import main

if __name__ == "__main__":
    main()
