"""Apply: the only place with side effects.

One run at a time (a lock that names its holder). Everything is rendered to a staging area and
`sshd -t` checks the complete staged configuration before anything live changes. Files are
replaced atomically (temporary file, fsync, rename); every change is journalled first, so a
failure midway restores the previous files, directories, owners and modes. Uploaded data is
never deleted: a removed channel's chroot moves to the archive.

Where things are: `run` (the `apply` function, its steps in order), `lock`, `staging`,
`sshd` (`sshd -t` and the reloads), `readback` (rendered authorized_keys read back),
`live` (the journalled changes and their rollback), `changes` (one change), `journal`
(atomic writes, the undo journal), `records` (state, audit log, host record), `converge`
(the retry when another host committed first), `interrupt` (SIGINT/SIGTERM), `result`.
"""

from provisioner.apply.converge import StateMoved
from provisioner.apply.interrupt import ApplyInterrupted, Interruption
from provisioner.apply.journal import TMP_SUFFIX, Journal, unused_name, write_atomic
from provisioner.apply.lock import host_lock
from provisioner.apply.result import ApplyResult
from provisioner.apply.run import apply
from provisioner.apply.sshd import reload, sshd_test
from provisioner.apply.staging import STAGING_PREFIX, remove_stale_staging

__all__ = [
    "STAGING_PREFIX",
    "TMP_SUFFIX",
    "ApplyInterrupted",
    "ApplyResult",
    "Interruption",
    "Journal",
    "StateMoved",
    "apply",
    "host_lock",
    "reload",
    "remove_stale_staging",
    "sshd_test",
    "unused_name",
    "write_atomic",
]
