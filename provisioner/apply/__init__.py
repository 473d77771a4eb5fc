"""Apply: the only place with side effects (see `provisioner.apply.run`)."""

from provisioner.apply.run import (
    TMP_SUFFIX,
    ApplyInterrupted,
    ApplyResult,
    Interruption,
    Journal,
    StateMoved,
    apply,
    host_lock,
    remove_stale_staging,
    sshd_test,
    unused_name,
    write_atomic,
)

__all__ = [
    "TMP_SUFFIX",
    "ApplyInterrupted",
    "ApplyResult",
    "Interruption",
    "Journal",
    "StateMoved",
    "apply",
    "host_lock",
    "remove_stale_staging",
    "sshd_test",
    "unused_name",
    "write_atomic",
]
