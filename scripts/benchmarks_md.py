"""One section of BENCHMARKS.md per benchmark script, between its own markers (shared by the scripts)."""

from pathlib import Path


def write_section(path: Path, section: str, start: str, end: str) -> None:
    """Replace the section between the ``start`` and ``end`` markers in ``path``, or append it; keep
    everything else (the other scripts' sections, the prose around them)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + section.rstrip("\n") + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
