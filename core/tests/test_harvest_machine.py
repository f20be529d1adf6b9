"""The harvest-interrupt state machine (``bridge.testing.harvest_machine``) on the tiny GPT-2: interrupts, kills
mid-write, lost ranks and concurrent harvests, each resumed to the uninterrupted harvest's files byte for byte."""

from bridge.testing.harvest_machine import check_harvest_interrupts


def test_harvest_interrupts_state_machine(gpt2):
    check_harvest_interrupts(gpt2, max_examples=12, steps=8)
