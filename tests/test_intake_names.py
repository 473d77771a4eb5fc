"""The file-name grammar: every name gets its precise anomaly code, and the parser never raises.

Examples are the field's own (Odoo's Belgian payroll, a PHP Dimona client, the public
documentation); the property tests feed arbitrary text and generated valid names.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.intake.names import FileName, check_name

TODAY = dt.date(2025, 1, 20)


@pytest.mark.parametrize(
    "name",
    [
        "FI.DMFA.112768.20250109.00014.R.1.1",
        "FS.DMFA.112768.20250109.00014.R.1.1",
        "GO.DMFA.112768.20250109.00014.R.1",
        "TD.DMFA.112768.20250109.00014.R.1",
        "FI.DIMN.006400.20250120.00001.T.4.3",
        "FI.DMFA.006400.20250121.00001.S.1.1",  # tomorrow: a sender a time zone ahead
    ],
)
def test_names_of_the_field_pass(name: str) -> None:
    check = check_name(name, today=TODAY)
    assert check.ok, check.findings
    assert check.parsed is not None and str(check.parsed) == name


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("GO.DMFA.112768.20250109.00014.R", 107),  # GO without PARTS
        ("GO.DMFA.112768.20250109.00014.R.1.1", 107),  # GO with a part number
        ("TD.DMFA.112768.20250109.00014.R.1.1.1", 107),
        ("FI.DMFA.112768.2025019.00014.R.1.1", 109),
        ("FI.DMFA.112768.2025O109.00014.R.1.1", 109),
        ("FI.DMFA.112768.20250230.00014.R.1.1", 110),
        ("FI.DMFA.112768.20250125.00014.R.1.1", 111),
        ("FI.DMFA.112768.20231231.00014.R.1.1", 126),
        ("FI.DMFA.112768.20250109.0014.R.1.1", 112),
        ("FI.DMFA.112768.20250109.000140.R.1.1", 112),
        ("FI.DMFA.112768.20250109.00000.R.1.1", 113),
        ("FI.DMFA.112768.20250109.0001A.R.1.1", 127),  # letters: files sent back only
        ("FI.DMFA.112768.20250109.00014.R.X.1", 114),
        ("FI.DMFA.112768.20250109.00014.R.12345.1", 114),
        ("FI.DMFA.112768.20250109.00014.R.1.Y", 115),
        ("FI.DMFA.112768.20250109.00014.R.0.1", 116),
        ("FI.DMFA.112768.20250109.00014.R.1.0", 116),
        ("FI.DMFA.112768.20250109.00014.R.2.3", 128),
        ("FI.DMFA.112768.20250109.00014.P.1.1", 117),
        ("FI.DMFA.112768.20250109.00014.r.1.1", 117),
        ("XX.DMFA.112768.20250109.00014.R.1.1", 129),
        ("fi.DMFA.112768.20250109.00014.R.1.1", 129),
        ("FO.ACRF.999999.20250109.0A1B2.R", 129),  # a sender may not upload FO
        ("payroll.xml", 129),
        ("", 129),
        ("FI.DMFA.112768.20250109.00014.R.1", 131),
        ("FI.DMFA.11276.20250109.00014.R.1.1", 131),
        ("FI.DM.112768.20250109.00014.R.1.1", 131),
        ("FI.DMFA.112768..00014.R.1.1", 131),
        ("FI.DMFA.112768.20250109.00014.R.1.1\n", 131),
        ("FS.DMFA.112768.20250109.00014.R.1", 132),
        ("FS.dmfa.112768.20250109.00014.R.1.1", 132),
        ("FS.DMFA.112768.20250109.00014.R.1.1\u202e", 132),
    ],
)
def test_each_malformation_has_its_code(name: str, code: int) -> None:
    check = check_name(name, today=TODAY)
    assert check.codes == (code,), (name, check.findings)


def test_files_sent_back_have_six_elements_and_letters_in_seq() -> None:
    check = check_name("FO.PCHK.999999.20250120.AB2C7.R", today=TODAY, uploaded=False)
    assert check.ok, check.findings
    assert check_name("FO.PCHK.112768.20250120.AB2C7.R", today=TODAY, uploaded=False).codes == (
        129,
    )


def test_a_key_is_told_only_from_plain_fields() -> None:
    assert check_name("FI.DMFA.112768.20250230.00014.R.1.1", today=TODAY).parsed is not None
    assert check_name("FI.DMFA.112768.2025-01-09.00014.R.1.1", today=TODAY).parsed is None


@given(st.text(max_size=300))
def test_never_raises_on_any_text(text: str) -> None:
    check = check_name(text, today=TODAY)
    assert check.ok == (not check.findings)
    if check.parsed is not None:
        assert str(check.parsed) == text  # a parsed name is exactly its fields


@given(st.binary(max_size=200))
def test_never_raises_on_names_that_are_not_utf8(raw: bytes) -> None:
    check_name(raw.decode("utf-8", "surrogateescape"), today=TODAY)


_digits = st.integers(min_value=1, max_value=99999).map(lambda n: f"{n:05d}")


@st.composite
def valid_names(draw: st.DrawFn) -> FileName:
    kind = draw(st.sampled_from(["FI", "FS", "GO", "TD"]))
    purpose = draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=4, max_size=4))
    sender = f"{draw(st.integers(0, 999998)):06d}"
    day = TODAY - dt.timedelta(days=draw(st.integers(-1, 360)))
    parts = draw(st.integers(1, 9999))
    part = str(draw(st.integers(1, parts))) if kind in ("FI", "FS") else None
    env = draw(st.sampled_from("RTS"))
    return FileName(kind, purpose, sender, f"{day:%Y%m%d}", draw(_digits), env, str(parts), part)


@given(valid_names())
def test_valid_names_round_trip(name: FileName) -> None:
    check = check_name(str(name), today=TODAY)
    assert check.ok, check.findings
    assert check.parsed == name
