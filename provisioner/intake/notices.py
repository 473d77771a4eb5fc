"""The notice a sender finds in ``OUT*`` when this gateway refused one of its sets.

Named in the field's grammar for files sent back: ``FO.PCHK.999999.<YYYYMMDD>.<SEQ>.<ENV>``.
``PCHK`` ("pre-check") is this gateway's own purpose code, chosen so that no sender software
mistakes the notice for one of the social security's acknowledgements (``ACRF``) or
notifications (``NOTI``); SEQ is five characters from A-Z and 2-7 derived from the set's id, so
that finishing a set after a crash writes the same notice again instead of a second one. The
notice is plain UTF-8 text: each refused file (its name escaped where it holds characters that
cannot be shown) with each code and a sentence in the contact's language, then in English.
It belongs to the sender (owner of the ``OUT*`` directory, mode 0640), who reads and deletes it.
"""

# Descriptor-relative os calls on purpose (dir_fd, O_NOFOLLOW).

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import Sequence
from datetime import datetime

from provisioner.intake.anomalies import ANOMALIES, Finding
from provisioner.intake.names import RETURN_SENDER
from provisioner.intake.uploads import UPLOAD_DIRS
from provisioner.safefile import shown_name

NOTICE_PURPOSE = "PCHK"
LANGUAGE_ORDER = ("nl", "fr", "de")

_HEADER = {
    "en": (
        "This is a pre-check by the SFTP gateway, not an acknowledgement of the social "
        "security. The gateway refused the set below: none of its files was forwarded. They "
        "are kept in quarantine. Correct the set and send it again with a GO file."
    ),
    "nl": (
        "Dit is een voorafgaande controle door de SFTP-gateway, geen ontvangstbewijs van de "
        "sociale zekerheid. De gateway heeft de reeks hieronder geweigerd: geen enkel bestand "
        "ervan werd doorgestuurd. De bestanden worden in quarantaine bewaard. Verbeter de reeks "
        "en verstuur ze opnieuw met een GO-bestand."
    ),
    "fr": (
        "Ceci est un contrôle préalable de la passerelle SFTP, pas un accusé de réception de "
        "la sécurité sociale. La passerelle a refusé le lot ci-dessous : aucun de ses fichiers "
        "n'a été transmis. Ils sont conservés en quarantaine. Corrigez le lot et renvoyez-le "
        "avec un fichier GO."
    ),
    "de": (
        "Dies ist eine Vorprüfung durch das SFTP-Gateway, keine Empfangsbestätigung der "
        "sozialen Sicherheit. Das Gateway hat den folgenden Satz abgelehnt: Keine seiner "
        "Dateien wurde weitergeleitet. Sie werden in Quarantäne aufbewahrt. Korrigieren Sie "
        "den Satz und senden Sie ihn mit einer GO-Datei erneut."
    ),
}
_TITLE = {
    "en": "Refused files",
    "nl": "Geweigerde bestanden",
    "fr": "Fichiers refusés",
    "de": "Abgelehnte Dateien",
}


def notice_name(set_id: str, directory: str, day: datetime) -> str:
    digest = hashlib.sha256(set_id.encode("utf-8", "surrogateescape")).digest()
    seq = base64.b32encode(digest).decode("ascii")[:5]
    return f"FO.{NOTICE_PURPOSE}.{RETURN_SENDER}.{day:%Y%m%d}.{seq}.{UPLOAD_DIRS[directory]}"


def languages(language: str | None) -> tuple[str, ...]:
    """The contact's language then English; all three national languages when unknown."""
    if language in LANGUAGE_ORDER:
        return (language, "en")
    return (*LANGUAGE_ORDER, "en")


def render_notice(
    *,
    set_label: str,
    directory: str,
    findings: Sequence[Finding],
    language: str | None,
    checked_at: datetime,
) -> str:
    lines = [
        f"SFTP gateway pre-check / {checked_at:%Y-%m-%dT%H:%M:%SZ}",
        f"Set: {shown_name(set_label)} ({directory})",
        "Codes: " + ", ".join(str(c) for c in sorted({f.code for f in findings})),
        "",
    ]
    by_file: dict[str, list[int]] = {}
    for f in sorted(findings):
        codes = by_file.setdefault(f.name, [])
        if f.code not in codes:
            codes.append(f.code)
    for lang in languages(language):
        lines.append(_HEADER[lang])
        lines.append("")
        lines.append(_TITLE[lang] + ":")
        for name, codes in by_file.items():
            lines.append(f"  {shown_name(name)}")
            lines.extend(f"    {code}: {ANOMALIES[code].sentence(lang)}" for code in codes)
        lines.append("")
    return "\n".join(lines)


def write_notice(out_fd: int, name: str, text: str) -> None:
    """Atomically (temporary file, fsync, rename) into the ``OUT*`` directory `out_fd`, owned
    by that directory's owner (the sender) and group, mode 0640."""
    st = os.fstat(out_fd)
    tmp = f".{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=out_fd)
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=out_fd,
    )
    try:
        os.write(fd, text.encode("utf-8"))
        with contextlib.suppress(PermissionError):
            os.fchown(fd, st.st_uid, st.st_gid)  # not root (a test, a demo): stays ours
        os.fchmod(fd, 0o640)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=out_fd)
        raise
    os.close(fd)
    os.rename(tmp, name, src_dir_fd=out_fd, dst_dir_fd=out_fd)
    os.fsync(out_fd)
