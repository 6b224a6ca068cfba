"""Signals noted until they are reported: one whose exception was swallowed still stops the command."""

from __future__ import annotations

import signal

import pytest

from bnfreeze.io import interrupts
from bnfreeze.io.files import atomic_path, committed_together


@pytest.fixture
def installed():
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    interrupts.install()
    yield
    interrupts.reported()
    signal.signal(signal.SIGINT, saved[0])
    signal.signal(signal.SIGTERM, saved[1])


def _swallowed(signum: int) -> None:
    """The handler running inside a finalizer: Python prints the exception and drops it."""
    try:
        interrupts._handler(signum, None)
    except interrupts.Interrupted:
        pass


def test_a_swallowed_signal_is_raised_at_the_next_checkpoint(installed):
    _swallowed(signal.SIGTERM)
    with pytest.raises(interrupts.Interrupted) as caught:
        interrupts.checkpoint()
    assert caught.value.exit_code == 143
    interrupts.reported()
    interrupts.checkpoint()  # reported: nothing left


def test_a_swallowed_signal_stops_an_output_before_it_is_put_in_place(installed, tmp_path):
    out = tmp_path / "out.json"
    with pytest.raises(interrupts.Interrupted):
        with atomic_path(out, force=False) as tmp:
            tmp.write_text("{}")
            _swallowed(signal.SIGINT)
    assert list(tmp_path.iterdir()) == []


def test_outputs_committed_together_are_all_dropped(installed, tmp_path):
    with pytest.raises(interrupts.Interrupted):
        with committed_together() as stack:
            for name in ("a.json", "b.json"):
                stack.enter_context(atomic_path(tmp_path / name, force=False)).write_text("{}")
            _swallowed(signal.SIGINT)
    assert list(tmp_path.iterdir()) == []
    assert not [path for path in interrupts.written() if path.startswith(str(tmp_path))]


def test_a_signal_inside_a_deferred_block_is_raised_when_it_ends(installed):
    with pytest.raises(interrupts.Interrupted):
        with interrupts.deferred():
            interrupts._handler(signal.SIGINT, None)  # only noted here
            noted = True
    assert noted
