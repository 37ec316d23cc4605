"""Every command_id, command_status and TLV tag value of the codec equals python-smpplib's own
table for the same name (smpplib/consts.py, smpplib/command_codes.py), an implementation
written independently from the same SMPP 3.4 sections (5.1.2.1, 5.1.3, 5.3.2).

The mutation run found status codes and tags that no test compared with the specification (a
constant off by one passed every codec test, since encoder and decoder share it)."""

from smpplib import command_codes, consts

from smsgw.shared.smpp import pdu as P


def test_command_status_values_match_smpplib() -> None:
    ours = {name: getattr(P, name) for name in dir(P) if name.startswith("SMPP_ESME_")}
    assert len(ours) >= 40
    assert {name: getattr(consts, name) for name in ours} == ours


def test_tlv_tags_match_smpplib() -> None:
    ours = {tag.name.lower(): tag.value for tag in P.Tag}
    assert {name: consts.OPTIONAL_PARAMS[name] for name in ours} == ours


def test_command_ids_match_smpplib() -> None:
    ours = {command.name.lower(): command.value for command in P.CommandId}
    assert {name: command_codes.commands[name] for name in ours} == ours
    # and every response is its request with bit 31 set (SMPP 3.4 5.1.2.1)
    for name, value in ours.items():
        if name.endswith("_resp"):
            assert value == ours[name.removesuffix("_resp")] | 0x80000000, name
