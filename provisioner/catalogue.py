"""The catalogue of quality types, channels, applications and purpose codes (catalogue.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ruamel.yaml import YAML

LANGUAGES = ("nl", "fr", "de", "en")


@dataclass(frozen=True, slots=True)
class PurposeCode:
    code: str
    confirmed: bool


@dataclass(frozen=True, slots=True)
class Application:
    key: str
    names: dict[str, str]
    purpose_codes: tuple[PurposeCode, ...]

    def name(self, lang: str) -> str:
        return self.names.get(lang) or self.names["en"]


@dataclass(frozen=True, slots=True)
class Catalogue:
    quality_types: dict[str, dict[str, str]]
    channels: dict[str, dict[str, Any]]
    applications: dict[str, Application]
    return_purpose_codes: tuple[PurposeCode, ...]
    reserved_usernames: frozenset[str]

    def quality_type_name(self, key: str, lang: str) -> str:
        names = self.quality_types.get(key, {})
        return names.get(lang) or names.get("en") or key

    def channel_name(self, key: str, lang: str = "en") -> str:
        names: dict[str, str] = self.channels.get(key, {}).get("names", {})
        return names.get(lang) or key


@cache
def load_catalogue() -> Catalogue:
    text = resources.files("provisioner").joinpath("catalogue.yaml").read_text("utf-8")
    raw = YAML(typ="safe", pure=False).load(text)
    apps = {
        key: Application(
            key,
            dict(value["names"]),
            tuple(PurposeCode(p["code"], bool(p["confirmed"])) for p in value["purpose_codes"]),
        )
        for key, value in raw["applications"].items()
    }
    return Catalogue(
        quality_types={k: dict(v["names"]) for k, v in raw["quality_types"].items()},
        channels={k: dict(v) for k, v in raw["channels"].items()},
        applications=apps,
        return_purpose_codes=tuple(
            PurposeCode(p["code"], bool(p["confirmed"])) for p in raw["return_purpose_codes"]
        ),
        reserved_usernames=frozenset(n.lower() for n in raw["reserved_usernames"]),
    )
