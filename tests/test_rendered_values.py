"""Every value a template writes has passed the check of its target syntax (issue 9).

Validation refuses what a file cannot hold; the check filters in the template environment
raise (never escape) when a value still does not fit, because reaching them means a bug.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EN_ONDERNEMING, USER_ONDERNEMING, Host

from provisioner.encoding import (
    CHECK_FILTERS,
    RenderingError,
    describe_character,
    free_text_problem,
)
from provisioner.render import template_environment


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("authorized_keys_option", '2030"'),
        ("authorized_keys_option", "a,b"),
        ("authorized_keys_option", "x y"),
        ("authorized_keys_option", "a\\b"),
        ("authorized_keys_address", "192.0.2.1"),  # not normalised
        ("authorized_keys_address", "192.0.2.1/24"),
        ("authorized_keys_address", '::1%",command="sh"'),
        ("authorized_keys_key", "ssh-ed25519 AAAA x\nssh-rsa AAAA"),
        ("authorized_keys_key", "ssh-ed25519 AAAA x\x00"),
        ("authorized_keys_key", "ssh-ed25519"),
        ("authorized_keys_key", 'command="x" ssh-ed25519 AAAA'),
        ("passwd_field", "a:b"),
        ("passwd_field", "a\nroot::0:0::/:/bin/sh"),
        ("group_member", "a,b"),
        ("sshd_token", "x y"),
        ("sshd_token", "a#b"),
        ("mail_text", "X\nSubject: pwned"),
        ("passwd_field", None),
        ("passwd_field", True),
    ],
)
def test_check_filters_raise_instead_of_escaping(name: str, value: object) -> None:
    with pytest.raises(RenderingError) as caught:
        CHECK_FILTERS[name](value)
    # The message never carries the value.
    assert str(value) not in str(caught.value) or str(value) in ("None", "True")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("authorized_keys_option", "203001312359Z"),
        ("authorized_keys_option", "SHA256:abc+/xyz"),
        ("authorized_keys_address", "192.0.2.0/24"),
        ("authorized_keys_address", "!2001:db8::/32"),
        ("authorized_keys_key", "ssh-ed25519 AAAAC3Nz laptop de Jérôme\t(2026)"),
        ("passwd_field", "sftp-provisioner 0403170701"),
        ("passwd_field", 200001),
        ("passwd_field", "/usr/sbin/nologin"),
        ("sshd_token", "/srv/sftp/%u"),
        ("mail_text", "Société Générale"),
    ],
)
def test_check_filters_pass_valid_values_unchanged(name: str, value: object) -> None:
    assert CHECK_FILTERS[name](value) == str(value)


def test_a_filter_failure_stops_the_rendering(host: Host) -> None:
    env = template_environment(host.settings())
    template = env.from_string("{{ v | passwd_field }}\n")
    with pytest.raises(RenderingError):
        template.render(v="a:b")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("X\nSubject: pwned", "U+000A (LINE FEED)"),
        ("a\x00b", "U+0000 (NULL)"),
        ("a\x7fb", "U+007F (DELETE)"),
        ("a\x85b", "U+0085 (NEXT LINE)"),
        ("a\u2028b", "U+2028 (LINE SEPARATOR)"),
        ("a\u2029b", "U+2029 (PARAGRAPH SEPARATOR)"),
        ("a\u202eb", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("a\u061cb", "U+061C (ARABIC LETTER MARK)"),
        ("a\u00adb", "U+00AD (SOFT HYPHEN)"),
        ("a\u034fb", "U+034F (COMBINING GRAPHEME JOINER)"),
        ("a\u180eb", "U+180E (MONGOLIAN VOWEL SEPARATOR)"),
        ("a\U000e0041b", "U+E0041 (TAG LATIN CAPITAL LETTER A)"),
        ("a\u200bb", "U+200B (ZERO WIDTH SPACE)"),
        ("a\ufe0fb", "U+FE0F (VARIATION SELECTOR-16)"),
        ("a\u3164b", "U+3164 (HANGUL FILLER)"),
        ("a\ue000b", "U+E000"),
        ("a\tb", "U+0009 (CHARACTER TABULATION)"),
    ],
)
def test_free_text_refuses_controls_separators_and_invisibles(text: str, shown: str) -> None:
    problem = free_text_problem(text)
    assert problem is not None and shown in problem


@pytest.mark.parametrize(
    "text",
    [
        "Société Générale",
        "Jörg Müller-Lüdenscheidt",
        "Łódź",
        "O'Brien & Co.",
        "Ελληνικά",
        "日本",
        "a\u00a0b",
    ],
)
def test_free_text_keeps_letters_accents_and_spaces(text: str) -> None:
    assert free_text_problem(text) is None


def test_describe_character_never_returns_the_character() -> None:
    assert describe_character("\n") == "U+000A (LINE FEED)"
    assert "\u202e" not in describe_character("\u202e")


# --- what reaches the rendered files -------------------------------------------------------


def _keys_file(host: Host) -> str:
    rec = host.compute()
    for channel in rec.accepted:
        if channel.user == USER_ONDERNEMING:
            (node,) = [n for n in rec.channel_nodes[channel.qid] if n.role == "authorized-keys"]
            assert node.content is not None
            return node.content.decode()
    raise AssertionError("no channel")


def test_no_declaration_path_in_authorized_keys(host: Host) -> None:
    text = _keys_file(host)
    assert "qualities" not in text and ".yaml" not in text
    assert f"# Technical user {USER_ONDERNEMING}.\n" in text


def test_from_entries_are_written_normalised(host: Host) -> None:
    host.edit(
        EN_ONDERNEMING,
        "        - ../keys/expdemo-payroll-2026.pub\n",
        "        - key: ../keys/expdemo-payroll-2026.pub\n"
        '          from: ["192.0.2.7", "2001:DB8:0::/32", "!192.0.2.128/025"]\n',
    )
    text = _keys_file(host)
    assert 'restrict,from="192.0.2.7/32,2001:db8::/32,!192.0.2.128/25" ssh-rsa ' in text


def test_the_rendering_no_longer_depends_on_the_working_directory(
    host: Host, tmp_path: Path
) -> None:
    first = _keys_file(host)
    moved = tmp_path / "elsewhere"
    host.decls.rename(moved)
    host.decls = moved
    assert _keys_file(host) == first


def test_a_certificate_name_with_a_control_character_is_refused(host: Host) -> None:
    """Its subject and issuer reach the overview and the notification mails, as free text."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    from provisioner.declarations import check_file

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ann\nSubject: pwned")])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
        .public_key(key.public_key())
        .serial_number(4242)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=700))
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), True
        )
        .sign(key, None)
    )
    (host.decls / "certs" / "newline.cer").write_bytes(certificate.public_bytes(Encoding.DER))
    text = host.quality(EN_ONDERNEMING).read_text("utf-8")
    old = text.split("certificate: ", 1)[1].split("\n", 1)[0]
    host.edit(EN_ONDERNEMING, f"certificate: {old}", "certificate: ../certs/newline.cer")
    result = check_file(host.quality(EN_ONDERNEMING), "q.yaml", host.decls)
    refused = [d for d in result.diagnostics if d.code == "certificate-name-character"]
    assert len(refused) == 1, result.diagnostics
    assert "U+000A (LINE FEED)" in refused[0].message
    assert "pwned" not in refused[0].message
    assert not result.ok
