"""The buffers the trainer keeps across steps: reused in place after the first step, never aliased to their source."""

import torch

from lets_hf.tensor_lists import accumulate_, copy_into, zeros_into


def test_zeros_into_allocates_once_then_zeroes_in_place():
    like = [torch.ones(3), torch.ones(2, 2)]
    buffer = zeros_into(None, like)
    assert [b.shape for b in buffer] == [(3,), (2, 2)] and all(b.abs().sum() == 0 for b in buffer)
    buffer[0] += 5.0
    again = zeros_into(buffer, like)
    assert again is buffer and again[0].data_ptr() == buffer[0].data_ptr() and again[0].abs().sum() == 0


def test_copy_into_copies_values_not_storage_and_reuses_the_buffer():
    source = [torch.arange(3.0, requires_grad=True)]
    buffer = copy_into(None, source)
    assert not buffer[0].requires_grad and buffer[0].data_ptr() != source[0].data_ptr()
    assert torch.equal(buffer[0], torch.arange(3.0))
    with torch.no_grad():
        source[0].mul_(2.0)
    again = copy_into(buffer, source)
    assert again is buffer and torch.equal(buffer[0], torch.tensor([0.0, 2.0, 4.0]))


def test_accumulate_copies_the_first_term_into_the_spare_buffer_then_adds_in_place():
    first, second = [torch.tensor([2.0, 4.0])], [torch.tensor([1.0, 1.0])]
    spare = [torch.full((2,), 7.0)]
    buffer = accumulate_(None, first, 0.5, spare)
    assert buffer is spare and torch.equal(buffer[0], torch.tensor([1.0, 2.0]))  # copied and scaled, no allocation
    assert torch.equal(first[0], torch.tensor([2.0, 4.0]))  # the terms are left as they were
    again = accumulate_(buffer, second, 0.5, [torch.zeros(2)])  # a buffer exists: the spare is not touched
    assert again is buffer and torch.equal(buffer[0], torch.tensor([1.5, 2.5]))
    assert torch.equal(second[0], torch.ones(2))
    fresh = accumulate_(None, first)  # no spare: new tensors
    assert fresh[0].data_ptr() != first[0].data_ptr() and torch.equal(fresh[0], first[0])
    scaled = accumulate_(None, first, 0.25)  # no spare, scaled: new tensors, the terms untouched
    assert torch.equal(scaled[0], torch.tensor([0.5, 1.0])) and torch.equal(first[0], torch.tensor([2.0, 4.0]))
