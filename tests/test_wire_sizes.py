"""The declared layouts agree with the sizes the specifications publish."""

from tick2quote.host.protocol import ethernet, itch, moldudp64, ouch, tick

# Typed from the specification tables, independently of the declarations.
ITCH_SIZES = {
    "S": 12,
    "R": 39,
    "H": 25,
    "Y": 20,
    "L": 26,
    "V": 35,
    "W": 12,
    "K": 28,
    "J": 35,
    "h": 21,
    "O": 48,
    "A": 36,
    "F": 40,
    "E": 31,
    "C": 36,
    "X": 23,
    "D": 19,
    "U": 35,
    "P": 44,
    "Q": 40,
    "B": 19,
    "I": 50,
    "N": 20,
}


def test_every_itch_type_has_its_published_size():
    assert itch.SIZES == ITCH_SIZES


def test_book_fields_sit_at_published_offsets():
    add = itch.FORMATS["A"].offsets
    assert (add["order_ref"], add["side"], add["shares"], add["stock"], add["price"]) == (
        11,
        19,
        20,
        24,
        32,
    )
    rep = itch.FORMATS["U"].offsets
    assert (rep["new_ref"], rep["shares"], rep["price"]) == (19, 27, 31)
    assert itch.FORMATS["C"].offsets["execution_price"] == 32


def test_header_and_record_sizes():
    assert moldudp64.HEADER.size == 20
    assert (
        ethernet.ETHERNET.size,
        ethernet.VLAN_TAG.size,
        ethernet.IPV4.size,
        ethernet.UDP.size,
    ) == (14, 4, 20, 8)
    assert tick.TICK.size == 40
    assert tick.TICK.offsets["sequence"] == 28


def test_ouch_sizes_and_offsets():
    assert ouch.TO_EXCHANGE["O"].size == 47
    assert ouch.TO_EXCHANGE["O"].offsets["cl_ord_id"] == 31
    assert ouch.TO_EXCHANGE["U"].size == 40
    assert ouch.TO_EXCHANGE["X"].size == 9
    assert ouch.FROM_EXCHANGE["E"].size == 36
    assert ouch.FROM_EXCHANGE["A"].size == 64
    assert ouch.FROM_EXCHANGE["U"].size == 68
    assert ouch.FROM_EXCHANGE["C"].size == 18
