"""Framing limits and property tests: arbitrary bytes never raise anything but
the codec's own error, and never hang."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocs.diameter.errors import FramingError
from ocs.diameter.framing import Framer
from ocs.diameter.grammar import first_error
from ocs.diameter.message import decode_message
from ocs.diameter.render import render_message

from wire_samples import SAMPLES, sample


def header(length: int, version: int = 1) -> bytes:
    return bytes([version]) + length.to_bytes(3, "big") + bytes.fromhex("80000118") + bytes(12)


@pytest.mark.parametrize("length", [0, 8, 19, 2**24 - 1, 22, 2**24 - 4])
def test_bad_lengths_break_the_stream(length):
    framer = Framer()
    frames, error = framer.feed(sample("DWR") + header(length) + sample("DWA"))
    assert frames == [sample("DWR")]             # what came before is still good
    assert isinstance(error, FramingError) and error.result_code == 5015
    assert framer.broken
    assert framer.feed(sample("DWA")) == ([], None)


def test_bad_version_5011():
    frames, error = Framer().feed(header(20, version=2))
    assert frames == [] and error.result_code == 5011


def test_max_length_is_configurable():
    frames, error = Framer(max_length=64).feed(sample("CER"))
    assert error.result_code == 5015 and "limit" in error.reason


def _decode_everything(dictionary, frame):
    msg, errors = decode_message(frame, dictionary)
    first_error(errors, msg)
    render_message(msg)          # touches every value, grouped or not


@given(st.binary(max_size=600))
def test_arbitrary_stream_never_crashes(dictionary, data):
    framer = Framer()
    frames, error = framer.feed(data)
    assert error is None or isinstance(error, FramingError)
    for frame in frames:
        _decode_everything(dictionary, frame)


@given(st.sampled_from([s[0] for s in SAMPLES]), st.data())
def test_mutated_samples_never_crash(dictionary, name, data):
    raw = bytearray(sample(name))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(20, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    frames, error = Framer().feed(bytes(raw))
    assert frames == [bytes(raw)] and error is None
    _decode_everything(dictionary, bytes(raw))


@given(st.binary(min_size=0, max_size=300))
def test_arbitrary_avp_area_after_valid_header(dictionary, body):
    body = body[: len(body) & ~3]
    frame = bytes([1]) + (20 + len(body)).to_bytes(3, "big") + bytes.fromhex("c0000110") \
        + (4).to_bytes(4, "big") + bytes(8) + body
    _decode_everything(dictionary, frame)
