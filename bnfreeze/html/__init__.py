"""``bnfreeze report``: one self-contained HTML page about a model's BNs (inline SVG plots)."""
