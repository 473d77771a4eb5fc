"""The identity of a quality: its enterprise number *and* its quality type.

One enterprise may hold several qualities (an NSSO employer and a provincial/local employer,
say), each with its own sender number and technical user, so the enterprise number alone does
not name a channel. Everything that keys on a quality (the state, the routing table, the
ledger, the intake gate) keys on this pair.
"""

from __future__ import annotations

from typing import NamedTuple


class QualityId(NamedTuple):
    enterprise_number: str  # 10 digits, no dots
    quality_type: str  # a catalogue code of ``quality.type``, e.g. ``employer_nsso``

    def __str__(self) -> str:
        return f"{self.enterprise_number}/{self.quality_type}"

    @classmethod
    def parse(cls, text: str) -> QualityId:
        """The reverse of ``str()``; raises ValueError on anything else."""
        number, sep, quality_type = text.partition("/")
        if not sep or len(number) != 10 or not number.isascii() or not number.isdigit():
            raise ValueError(f"not a quality identity (ENTERPRISE/TYPE): {text!r}")
        if (
            not quality_type
            or not quality_type.isascii()
            or not quality_type.replace("_", "").isalnum()
        ):
            raise ValueError(f"not a quality identity (ENTERPRISE/TYPE): {text!r}")
        return cls(number, quality_type)
