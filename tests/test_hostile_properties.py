"""Hostile values in every free-text field, `from:` entry, key comment and the file name (issue 9).

For arbitrary Unicode (controls, quotes, newlines, separators, bidi, NUL, commas, '=' and '"')
the real gate (`validate` on a temporary tree) either refuses the declaration with an error at
a line where a hostile value sits, or accepts it, and then every file the real renderer writes
reads back to exactly what the declaration allows: authorized_keys through the strict reader
(provisioner.authorized_keys), passwd/group/shadow through their field splits, the routing
table through json.loads with the quality name equal to the declared one. No crash, no hang:
each example within the deadline.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from provisioner.authorized_keys import check_rendering, parse
from provisioner.diagnostics import Severity
from provisioner.models import _address_pattern
from provisioner.render import (
    Channel,
    expected_keys,
    render_channel,
    render_host,
    routing_entry,
)
from provisioner.settings import load_settings
from provisioner.state.model import Registration
from provisioner.validate import ValidateSettings, validate

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MATERIAL = Path(__file__).parent / "cases" / "_material"
USER = "hostile0001"
EN = "0403.170.701"

_public = Ed25519PrivateKey.from_private_bytes(bytes([5]) * 32).public_key()
KEY = _public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()

# The characters an attacker reaches for, weighted in next to arbitrary text.
NASTY = [
    *"\n\r\x00\t\x0b\x0c\x1b\x7f\x85\u2028\u2029\u202e\u2066\u061c\u00ad\u034f\u180e\ufeff",
    *"\"',=:#!%\\ ",
    "\U000e0041",
    "\u200b",
]
text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(NASTY)),
    min_size=1,
    max_size=24,
)
# Printable but awkward for every target syntax: quotes, commas, '=', ':', '#', accents.
printable = st.text(
    alphabet=st.one_of(
        st.characters(categories=("L", "M", "N", "P", "S", "Zs")),
        st.sampled_from(list("\"',=:#!%\\ ")),
    ),
    min_size=1,
    max_size=24,
).filter(lambda v: v.strip() != "")
hostile = st.one_of(text, printable, st.just("Plain Name"))
addresses = st.one_of(
    st.ip_addresses().map(str),
    st.builds(lambda a, n: f"{a}/{n}", st.ip_addresses(v=4).map(str), st.integers(0, 33)),
    st.builds(lambda a, t: a + t, st.ip_addresses().map(str), text),
    st.builds(lambda a: "!" + a, st.ip_addresses().map(str)),
    text,
)


def quote(value: str) -> str:
    """A YAML double-quoted scalar holding exactly `value` (every non-ASCII character escaped)."""
    out = []
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


FIELDS = ("quality", "admin", "last_name", "first_name", "function")


def declaration(
    values: dict[str, str], comment: str, from_: list[str]
) -> tuple[str, dict[str, int]]:
    """The YAML text, and the line of each hostile value."""
    lines = [
        "# Property test: hostile values everywhere.",
        "quality:",
        f"  name: {quote(values['quality'])}",
        f'  enterprise_number: "{EN}"',
        "  type: employer_nsso",
        "administrators:",
        f"  - name: {quote(values['admin'])}",
        "    email: ann@hostile.example",
        "    role: local",
        "structured_messages:",
        f"  technical_user: {USER}",
        "  contact:",
        f"    last_name: {quote(values['last_name'])}",
        f"    first_name: {quote(values['first_name'])}",
        "    title: mr",
        f"    function: {quote(values['function'])}",
        "    language: nl",
        '    phone: "02 555 12 34"',
        "    emails:",
        "      - edi@hostile.example",
        "  channels:",
        "    sftp:",
        "      connection: internet",
        "      ssh_keys:",
        f"        - key: {quote(KEY + ' ' + comment)}",
        "          from:",
        *(f"            - {quote(v)}" for v in from_),
        "      certificate: ../certs/signature.cer",
        "      applications: [dmfa]",
    ]
    at = {
        "quality": 3,
        "admin": 7,
        "last_name": 13,
        "first_name": 14,
        "function": 16,
        "key": 25,
    }
    for j in range(len(from_)):
        at[f"from{j}"] = 27 + j
    at["from"] = 26
    return "\n".join(lines) + "\n", at


def file_name(name: str) -> str:
    # What Linux refuses in a name: '/' and NUL; and a name has at most 255 bytes.
    cleaned = name.replace("/", "_").replace("\x00", "_")
    while len((cleaned + ".yaml").encode("utf-8", "surrogateescape")) > 255:
        cleaned = cleaned[:-1]
    return (cleaned or "x") + ".yaml"


@settings(
    max_examples=150,
    deadline=1000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    values=st.fixed_dictionaries(dict.fromkeys(FIELDS, hostile)),
    comment=st.one_of(text, printable, st.just("laptop")),
    from_=st.lists(addresses, min_size=1, max_size=3),
    name=st.one_of(text, printable, st.just("quality")),
)
# The payloads of issue 9 (findings 1, 2 and 10), always tried.
@example(
    values=dict.fromkeys(FIELDS, "Plain Name"),
    comment="laptop",
    from_=['fe80::1%"\n' + KEY + " attacker\n#"],
    name="quality",
)
@example(
    values=dict.fromkeys(FIELDS, "Plain Name"),
    comment="laptop",
    from_=['::1%",command="sh -c id",port-forwarding,pty,agent-forwarding,x="'],
    name="quality",
)
@example(
    values=dict.fromkeys(FIELDS, "Plain Name"),
    comment="laptop",
    from_=["192.0.2.0/24"],
    name="x\nssh-ed25519 " + KEY.split()[1] + " injected\n",
)
@example(
    values={**dict.fromkeys(FIELDS, "Plain Name"), "quality": "X\nSubject: pwned"},
    comment="laptop",
    from_=["192.0.2.1/24", "127.0.0.1/255.0.0.0", "!0.0.0.0/0"],
    name="quality",
)
def test_refused_at_its_line_or_rendered_exactly(
    values: dict[str, str], comment: str, from_: list[str], name: str
) -> None:
    _judge(values, comment, from_, name)


networks = st.builds(
    lambda a, n: str(ipaddress.ip_network(f"{a}/{n % (a.max_prefixlen + 1)}", strict=False)),
    st.ip_addresses(),
    st.integers(0, 128),
)
valid_addresses = st.one_of(st.ip_addresses().map(str), networks, networks.map(lambda n: "!" + n))


@settings(
    max_examples=60,
    deadline=1000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    values=st.fixed_dictionaries(dict.fromkeys(FIELDS, printable)),
    comment=printable,
    from_=st.lists(valid_addresses, min_size=1, max_size=4),
    name=printable,
)
def test_printable_but_awkward_values_render_exactly(
    values: dict[str, str], comment: str, from_: list[str], name: str
) -> None:
    """Quotes, commas, '=', ':' and '#' are not refused in free text; they must come out of
    every renderer exactly as declared, or not at all (authorized_keys has no free text)."""
    _judge(values, comment, from_, name)


def _judge(values: dict[str, str], comment: str, from_: list[str], name: str) -> None:
    source, at = declaration(values, comment, from_)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "qualities").mkdir()
        (root / "certs").mkdir()
        shutil.copy(MATERIAL / "certs" / "signature.cer", root / "certs" / "signature.cer")
        try:
            (root / "qualities" / file_name(name)).write_text(source, "utf-8")
        except (OSError, UnicodeEncodeError):
            event("file name the file system refuses")
            return  # a name this file system cannot hold is no input anyone can commit
        report = validate(
            ValidateSettings(paths=(Path(),), cwd=root, now=NOW, cache_dir=None, jobs=1),
            full=True,
        )
        errors = [d for d in report.diagnostics if d.severity is Severity.ERROR]
        if errors:
            event("refused")
            hostile_name = file_name(name) != "quality.yaml" and name != "quality"
            allowed = set(at.values())
            for d in errors:
                assert d.location.line in allowed or (hostile_name and d.location.line <= 1), (
                    str(d),
                    source,
                )
            return
        event("accepted and rendered")
        _check_rendering(root, report.result(0), values, comment, from_)


def _check_rendering(
    root: Path, result: object, values: dict[str, str], comment: str, from_: list[str]
) -> None:
    from provisioner.declarations import FileResult

    assert isinstance(result, FileResult)
    settings_file = root / "settings.yaml"
    settings_file.write_text('openssh_version: "9.2"\nhostname: test-host\n', "utf-8")
    host = load_settings(settings_file, root=root / "host", environ={})
    registration = Registration(
        enterprise_number="0403170701",
        quality_type="employer_nsso",
        technical_user=USER,
        sender_number=100000,
        uid=200000,
        registered_at=NOW,
        status="active",
        status_since=NOW,
    )
    channel = Channel(registration, result.display, result=result)

    (keys_node,) = [n for n in render_channel(host, channel) if n.role == "authorized-keys"]
    assert keys_node.content is not None
    check_rendering(keys_node.content, expected_keys(result.keys))
    (line,) = parse(keys_node.content)
    assert line.from_ == tuple(_address_pattern(v) for v in from_)
    assert line.comment == comment.strip()

    entry = routing_entry(channel, host)
    nodes = {n.role: n for n in render_host(host, [registration], {"100000": entry})}
    passwd = _content(nodes["passwd"]).split("\n")
    assert passwd[-1] == "" and len(passwd) == 2
    assert passwd[0].split(":") == [
        USER,
        "x",
        "200000",
        str(host.sftp_gid),
        "sftp-provisioner 0403170701/employer_nsso",  # the quality identity
        "/",
        str(host.shell),
    ]
    shadow = _content(nodes["shadow"]).split("\n")
    assert shadow == [f"{USER}:*:::::::", ""]
    group = _content(nodes["group"]).split("\n")
    assert group == [f"{host.sftp_group}:x:{host.sftp_gid}:", ""]
    routing = json.loads(_content(nodes["routing"]))
    assert routing["senders"]["100000"]["quality"] == values["quality"]
    assert routing["senders"]["100000"]["username"] == USER


def _content(node: object) -> str:
    content = getattr(node, "content", None)
    assert isinstance(content, bytes)
    return content.decode("utf-8")
