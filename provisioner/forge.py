"""Forge handles: an administrator's GitHub or GitLab login, next to their e-mail address.

Pull requests, CODEOWNERS and the forges' review rules know people by their account login;
the e-mail of a GitHub account is private for most users, so a CI job cannot pass it. An
administrator may therefore carry `github: login` and/or `gitlab: login`. Each is checked
against its forge's own rules, strictly: a login the forge could never issue is a typo, and a
CODEOWNERS line naming it would silently own nothing.

Who an administrator is, for `validate --author`, is a set of *identities*: the e-mail address
(lower case) and `github:<login>` / `gitlab:<login>` (lower case: both forges compare logins
without case). An author given as `github:login`, `gitlab:login` or an e-mail is that identity.
A bare login is taken as a login of the forge whose CI runs the command (`GITHUB_ACTIONS=true`
or `GITLAB_CI=true`); elsewhere it is accepted only when its syntax fits one forge alone (a dot
or an underscore: GitLab), and otherwise refused with a request to write the forge. The
resolution never looks at the declarations, which are hostile input: what a file declares
cannot change whom an author is taken for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from email_validator import EmailNotValidError, validate_email

from provisioner.errors import SettingsError

Forge = Literal["github", "gitlab"]
FORGES: tuple[Forge, ...] = ("github", "gitlab")

# GitHub: 1-39 characters, ASCII letters, digits and single hyphens, no hyphen at either end.
_GITHUB = re.compile(r"[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}")
_GITHUB_MAX = 39
# GitLab (docs "Rules for usernames"): 2-255 characters of ASCII letters, digits, `_`, `.`,
# `-`; starts and ends with a letter or digit; no two special characters in a row; never ends
# in `.git` or `.atom`.
_GITLAB = re.compile(r"[A-Za-z0-9](?:[._-]?[A-Za-z0-9])+")
_GITLAB_MAX = 255

GITHUB_PATTERN = "^[A-Za-z0-9](-?[A-Za-z0-9]){0,38}$"
GITLAB_PATTERN = "^[A-Za-z0-9]([._-]?[A-Za-z0-9])+$"


def _shown(value: str) -> str:
    # Hostile input: escaped by repr, and never more than a short prefix of it.
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}… ({len(value)} characters)"


def _odd_character(value: str, allowed: str) -> str | None:
    for ch in value:
        if not (ch.isascii() and (ch.isalnum() or ch in allowed)):
            return f"U+{ord(ch):04X}" if not ch.isprintable() or not ch.isascii() else repr(ch)
    return None


def github_login_problem(value: str) -> str | None:
    """Why `value` cannot be a GitHub login, or None when it can."""
    if len(value) <= _GITHUB_MAX and value.isascii() and _GITHUB.fullmatch(value):
        return None
    if not value:
        reason = "it is empty"
    elif len(value) > _GITHUB_MAX:
        reason = f"it has {len(value)} characters, at most {_GITHUB_MAX}"
    elif (odd := _odd_character(value, "-")) is not None:
        reason = f"only ASCII letters, digits and hyphens (found {odd})"
    elif value.startswith("-") or value.endswith("-"):
        reason = "it may not start or end with a hyphen"
    else:
        reason = "it may not hold two hyphens in a row"
    return f"{_shown(value)} is not a GitHub login: {reason}"


def gitlab_login_problem(value: str) -> str | None:
    """Why `value` cannot be a GitLab username, or None when it can."""
    ok = len(value) <= _GITLAB_MAX and value.isascii() and _GITLAB.fullmatch(value)
    if ok and not value.lower().endswith((".git", ".atom")):
        return None
    if len(value) < 2:
        reason = "it needs at least 2 characters"
    elif len(value) > _GITLAB_MAX:
        reason = f"it has {len(value)} characters, at most {_GITLAB_MAX}"
    elif (odd := _odd_character(value, "._-")) is not None:
        reason = f"only ASCII letters, digits, '_', '.' and '-' (found {odd})"
    elif not (value[0].isalnum() and value[-1].isalnum()):
        reason = "it must start and end with a letter or digit"
    elif ok:
        reason = "it may not end in '.git' or '.atom'"
    else:
        reason = "it may not hold two of '_', '.' and '-' in a row"
    return f"{_shown(value)} is not a GitLab username: {reason}"


def login_problem(forge: Forge, value: str) -> str | None:
    problem = github_login_problem(value) if forge == "github" else gitlab_login_problem(value)
    if problem is not None and value.startswith("@"):
        return f"{problem}; write the login without the @"
    return problem


def identity(forge: Forge, login: str) -> str:
    return f"{forge}:{login.lower()}"


def identities(email: object, handles: Mapping[str, object]) -> tuple[str, ...]:
    """An administrator's identities: the e-mail (lower case), then each valid forge login.

    Used on raw YAML too (an invalid file, a base revision): a value of the wrong type or a
    login its forge would refuse is no identity at all.
    """
    out: list[str] = []
    # An e-mail identity always holds an @, which no login can: an invalid file's
    # `email: "github:someone"` is nobody's identity, not a GitHub login.
    if isinstance(email, str) and "@" in email:
        out.append(email.lower())
    for forge in FORGES:
        login = handles.get(forge)
        if isinstance(login, str) and login_problem(forge, login) is None:
            out.append(identity(forge, login))
    return tuple(out)


def forge_of_environment(environ: Mapping[str, str]) -> Forge | None:
    """The forge whose CI job this is, from the variables each forge's runner sets."""
    github = environ.get("GITHUB_ACTIONS", "").lower() == "true"
    gitlab = environ.get("GITLAB_CI", "").lower() == "true"
    if github == gitlab:
        return None
    return "github" if github else "gitlab"


def resolve_author(text: str, environ: Mapping[str, str]) -> str:
    """`--author` as one identity: an e-mail, `github:login`, `gitlab:login` or a bare login.

    Raises SettingsError (a user error) for an empty value, a login its forge would refuse and a
    bare login whose forge cannot be told; an empty value usually means the CI variable that
    should hold the author is not set, and refusing every change for it would hide that.
    """
    value = text.strip()
    if not value:
        raise SettingsError(
            "--author is empty: the CI variable meant to hold the pull request's author is not "
            "set (GitHub: github.event.pull_request.user.login, GitLab: $GITLAB_USER_LOGIN)"
        )
    forge, sep, login = value.partition(":")
    if sep:
        if forge not in FORGES:
            raise SettingsError(
                f"--author {value!r}: expected an e-mail address, github:LOGIN, gitlab:LOGIN "
                "or a bare login"
            )
        known: Forge = "github" if forge == "github" else "gitlab"
        problem = login_problem(known, login)
        if problem is not None:
            raise SettingsError(f"--author: {problem}")
        return identity(known, login)
    if "@" in value:
        try:
            checked = validate_email(value, check_deliverability=False)
        except EmailNotValidError as exc:
            raise SettingsError(
                f"--author {value!r} is not a valid e-mail address: {exc}"
            ) from None
        return str(checked.normalized).lower()
    running = forge_of_environment(environ)
    fits = [f for f in FORGES if login_problem(f, value) is None]
    if running is not None:
        problem = login_problem(running, value)
        if problem is not None:
            raise SettingsError(f"--author: {problem}")
        return identity(running, value)
    if len(fits) == 1:
        return identity(fits[0], value)
    if not fits:
        raise SettingsError(
            f"--author {value!r} is neither an e-mail address nor a GitHub or GitLab login"
        )
    raise SettingsError(
        f"--author {value!r} could be a GitHub or a GitLab login, and this is not a GitHub "
        f"Actions or GitLab CI job: write github:{value} or gitlab:{value}"
    )


def codeowner(forge: Forge, email: str, handles: Mapping[str, str | None]) -> str:
    """How a CODEOWNERS file of `forge` names an administrator: `@login` when known."""
    login = handles.get(forge)
    return f"@{login}" if login else email
