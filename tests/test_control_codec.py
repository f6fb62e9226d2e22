"""The control protocol's host codec: round trips, typed errors, rules against the reference
model's parameter checks, and the register client against the endpoint model."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tick2quote.hdl.control import ControlPlane
from tick2quote.hdl.regmap import RegisterMap, between, device_map, one_of, quote_param_fields
from tick2quote.host.protocol import control as proto
from tick2quote.host.protocol.errors import FieldValueError, LengthError, TruncatedError
from tick2quote.sim.models.pricing import QuoteParams

U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
requests = st.builds(proto.Request, st.integers(0, 255), U32, U64, U32, U64)
statuses = st.sampled_from(list(proto.Status))


@st.composite
def responses(draw):
    status = draw(statuses)
    count = draw(st.integers(0, 32)) if status == proto.Status.OK else 0
    opcode = draw(st.sampled_from(list(proto.Opcode)))
    values = tuple(draw(st.lists(U64, min_size=count, max_size=count)))
    return proto.Response(opcode, draw(U32), status, draw(U32), values)


@given(requests)
def test_request_round_trip(req):
    payload = proto.encode_request(req)
    assert len(payload) == 28 and payload[:2] == b"T2"
    assert proto.decode_request(payload) == req
    assert int.from_bytes(payload[8:16], "big") == req.token  # offsets as the manual says


@given(responses())
def test_response_round_trip(resp):
    payload = proto.encode_response(resp)
    assert len(payload) == 16 + 8 * len(resp.values)
    assert payload[3] == resp.opcode | 0x80
    assert proto.decode_response(payload) == resp


@given(responses(), st.data())
def test_response_cut_or_extended_is_refused(resp, data):
    payload = proto.encode_response(resp)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(TruncatedError) as err:
        proto.decode_response(payload[:cut])
    assert err.value.offset == cut
    extra = data.draw(st.binary(min_size=1, max_size=9))
    with pytest.raises(LengthError) as err:
        proto.decode_response(payload + extra)
    assert err.value.offset == len(payload)


@pytest.mark.parametrize(
    "position,value,offset",
    [(0, b"X", 0), (2, b"\x02", 2), (3, b"\x01", 3), (8, b"\x09", 8), (3, b"\x85", 3)],
)
def test_response_field_errors(position, value, offset):
    payload = bytearray(proto.encode_response(proto.Response(proto.Opcode.READ, 1, 0, 5, (9,))))
    payload[position : position + len(value)] = value
    with pytest.raises(FieldValueError) as err:
        proto.decode_response(bytes(payload))
    assert err.value.offset == offset


def test_error_status_with_values_is_refused():
    payload = bytearray(proto.encode_response(proto.Response(proto.Opcode.READ, 1, 0, 5, (9,))))
    payload[8] = proto.Status.BAD_ADDRESS
    with pytest.raises(FieldValueError) as err:
        proto.decode_response(bytes(payload))
    assert err.value.offset == 9


def test_request_errors():
    good = proto.encode_request(proto.Request(1, 2, 3, 4, 5))
    with pytest.raises(TruncatedError):
        proto.decode_request(good[:27])
    with pytest.raises(LengthError):
        proto.decode_request(good + b"\0")
    with pytest.raises(FieldValueError) as err:
        proto.decode_request(good[:2] + b"\x07" + good[3:])
    assert err.value.offset == 2


FIELDS = {f.name: f for f in quote_param_fields()}


@given(st.sampled_from(sorted(FIELDS)), st.integers(-(2**65), 2**65))
def test_param_rules_match_quote_params(name, value):
    """Each field's rule (gateware and host mirror) accepts exactly what the model accepts."""
    if name == "enabled":
        model_ok = value in (0, 1)
    else:
        try:
            QuoteParams(**{name: value})
            model_ok = True
        except ValueError:
            model_ok = False
    field = FIELDS[name]
    entry = {"width": field.width, "signed": field.signed, "rule": field.rule.describe()}
    assert proto.accepts(entry, value) == model_ok
    on_wire = value & (2**64 - 1)  # what a WRITE carries: the gateware sees only this
    if field.signed and -(2**63) <= value < 2**63 or not field.signed and 0 <= value < 2**64:
        assert field.accepts(on_wire) == model_ok


def test_quote_param_resets_are_model_defaults():
    defaults = QuoteParams()
    for f in quote_param_fields():
        assert f.reset == int(getattr(defaults, f.name)), f.name


def test_regmap_checks_eagerly():
    rm = RegisterMap()
    rm.add("a", 0x100)
    with pytest.raises(ValueError, match="overlaps register a"):
        rm.window("w", 0x100, 2, quote_param_fields())
    with pytest.raises(ValueError, match="already in the map"):
        rm.add("a", 0x101)
    with pytest.raises(ValueError, match="access of b must be one of"):
        rm.add("b", 0x102, access="rx")
    with pytest.raises(ValueError, match="fails its own rule"):
        rm.add("c", 0x103, 16, rule=one_of(1, 100), reset=5)
    with pytest.raises(ValueError, match="stride of w must be a power of two"):
        rm.window("w", 0x1000, 2, quote_param_fields(), stride=12)
    with pytest.raises(ValueError, match="width of d must be"):
        rm.add("d", 0x104, 65)
    with pytest.raises(ValueError, match="between needs low <= high"):
        between(3, 2)
    with pytest.raises(ValueError, match="reserved range"):
        ControlPlane(_reserved_map())
    with pytest.raises(ValueError, match="max_read must be an integer in 1 .. 32, not 0"):
        ControlPlane(device_map(2), max_read=0)


def _reserved_map():
    rm = RegisterMap()
    rm.add("low", 0x20)
    return rm


def test_client_against_model():
    plane = ControlPlane(device_map(3), peers=["10.0.0.9"], token=42, max_read=4)
    plane._MustUse__silence = True  # only its description is used here
    description = json.loads(json.dumps(plane.describe()))  # as the host gets it
    model = proto.EndpointModel(description)
    model.status["quotes"] = 123
    src = 0x0A000009
    client = proto.RegisterClient(description, lambda p: model.handle(p, src), token=42)
    assert client.read("quotes") == 123
    assert client.read("session_token") == 0  # write-only
    assert client.write_param("params", 2, "skew_num", -7) == -7
    assert client.read_param("params", 2, "skew_num") == -7
    assert client.read_param("params", 1, "band_bps") == 500
    with pytest.raises(ValueError, match="band_bps does not accept 0"):
        client.write_param("params", 1, "band_bps", 0)
    with pytest.raises(proto.RegisterError) as err:
        client.write_param("params", 1, "band_bps", 0, check=False)
    assert err.value.status == proto.Status.INVALID_VALUE
    with pytest.raises(proto.RegisterError) as err:
        client.write_raw(client.address("quotes"), 1)
    assert err.value.status == proto.Status.READ_ONLY
    with pytest.raises(proto.RegisterError) as err:
        client.read_block(0x180, 5)
    assert err.value.status == proto.Status.BAD_COUNT
    assert client.write("kill_switch", 0) == 0 and model.value("kill_switch") == 0
    assert set(client.read_all()) >= {"quotes", "frames", "fills"}
