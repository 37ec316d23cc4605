"""Every command_id, command_status and TLV tag value of the codec equals python-smpplib's own
table for the same name (smpplib/consts.py, smpplib/command_codes.py), an implementation
written independently from the same SMPP 3.4 sections (5.1.2.1, 5.1.3, 5.3.2).

The mutation run found status codes and tags that no test compared with the specification (a
constant off by one passed every codec test, since encoder and decoder share it)."""

import dataclasses

from smpplib import command_codes, consts

from smsgw.shared.smpp import pdu as P


def test_command_status_values_match_smpplib() -> None:
    ours = {name: getattr(P, name) for name in dir(P) if name.startswith("SMPP_ESME_")}
    assert len(ours) >= 40
    assert {name: getattr(consts, name) for name in ours} == ours


def test_tlv_tags_match_smpplib() -> None:
    # __members__ includes aliases: a tag changed into another tag's value still shows up
    ours = {name.lower(): tag.value for name, tag in P.Tag.__members__.items()}
    assert {name: consts.OPTIONAL_PARAMS[name] for name in ours} == ours
    assert len(set(ours.values())) == len(ours)  # no two names for one tag


def test_command_ids_match_smpplib() -> None:
    ours = {name.lower(): command.value for name, command in P.CommandId.__members__.items()}
    assert len(set(ours.values())) == len(ours)
    assert {name: command_codes.commands[name] for name in ours} == ours
    # and every response is its request with bit 31 set (SMPP 3.4 5.1.2.1)
    for name, value in ours.items():
        if name.endswith("_resp"):
            assert value == ours[name.removesuffix("_resp")] | 0x80000000, name


def test_unset_fields_are_the_specifications_null_values() -> None:
    """SMPP 3.4 section 3.1: an unset Integer is NULL (0) and an unset C-Octet String is the
    empty string; a PDU built without a field must send exactly that. The bind PDUs' one
    exception is interface_version, 0x34 for SMPP 3.4 (section 4.1)."""
    nulls = {"int": 0, "str": "", "bytes": b"", "tuple": ()}  # tuple: submit_multi's lists
    for cls in P.PDU_CLASSES.values():
        pdu = cls()
        for field in dataclasses.fields(pdu):
            kind = getattr(field.type, "__name__", str(field.type))
            if field.name == "tlvs":
                assert pdu.tlvs == (), cls.__name__
                continue
            expected = 0x34 if field.name == "interface_version" else nulls[kind]
            assert getattr(pdu, field.name) == expected, (cls.__name__, field.name)
