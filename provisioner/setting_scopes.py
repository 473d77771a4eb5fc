"""Which settings a plan depends on, declared per setting.

The record of the last apply (its context, `hostrecord.context_key`) and a saved plan (its
settings fingerprint) are keyed on settings. Keyed on all of them, changing the SMTP timeout
or the sender of the mails re-rendered and re-read every channel and made every saved plan
stale, though neither renders a byte. Keyed on a hand-picked few, a new setting that rendering
reads would be forgotten and a stale record trusted. So every setting of `HostSettings` is in
exactly one scope below, and tests/test_setting_scopes.py fails for a setting in none: whoever
adds one decides.
"""

from __future__ import annotations

from provisioner.settings import HostSettings

# What rendered paths are made of (templates, paths, ids, sshd and rsyslog options): the
# context of the host record, and part of the plan fingerprint.
RENDERS = frozenset(
    {
        "chroot_base",
        "keys_dir",
        "sshd_dropin",
        "extrausers_dir",
        "routing_table",
        "certificates_dir",
        "sftp_group",
        "sftp_gid",
        "gateway_gid",
        "shell",
        # The OpenSSH version is detected from it (and the drop-in depends on the version).
        "sshd_binary",
        "openssh_version",
        "listen_address",
        "port",
        "legacy_ssh_rsa",
        "host_password_logins",
        "log_level",
        "sftp_log_level",
        "max_auth_tries",
        "login_grace_time",
        "max_startups",
        "per_source_max_startups",
        "per_source_net_block_size",
        "per_source_penalties",
        "sftp_denied_requests",
        "sftp_umask",
        "syslog_sockets",
        "rsyslog_dropin",
        "templates_dir",
    }
)

# What the plan decides with, or what applying it does, beyond rendering: part of the plan
# fingerprint only (a saved plan made with other values is stale), not of the record's context
# (a channel's own key holds its uid and sender number already).
PLANS = frozenset(
    {
        # Who gets which uid and sender number.
        "uid_min",
        "uid_max",
        "sender_start",
        # The removal guard.
        "max_removals",
        "max_removals_percent",
        # Where the plan is applied: the state it was made from, the trial root, where
        # removed chroots go, where files are staged, how sshd is checked and reloaded.
        "state_url",
        "root",
        "archive_dir",
        "work_dir",
        "sshd_check",
        "reload_command",
        "syslog_reload_command",
    }
)

# Neither: what other commands read (the intake gate, notifications, status, the ledger, the
# timers), how the run keeps its books (lock, audit log, metrics, retries), and the caches,
# which only ever make a run faster, never different.
ELSEWHERE = frozenset(
    {
        "cache_dir",
        "audit_log",
        "lock_file",
        "hostname",
        "host_name",
        "state_retries",
        "state_retry_min_delay",
        "state_retry_max_delay",
        "declarations",
        "reconcile_every",
        "status_file",
        "metrics_file",
        "ledger_file",
        "ledger_max_age",
        "notifications",
        "notify_transport",
        "outbox_dir",
        "mail_from",
        "smtp_host",
        "smtp_port",
        "smtp_starttls",
        "smtp_ca_file",
        "smtp_timeout",
        "public_host",
        "public_port",
        "intake_dir",
        "quarantine_dir",
        "intake_set_max_age",
        "intake_max_file_size",
        "intake_stability",
        "intake_poll_interval",
    }
)


def rendering_settings(settings: HostSettings) -> str:
    """The settings rendering reads, as JSON (for the host record's context)."""
    return settings.model_dump_json(include=set(RENDERS))


def planning_settings(settings: HostSettings) -> str:
    """The settings a plan depends on, as JSON (for its settings fingerprint)."""
    return settings.model_dump_json(include=set(RENDERS | PLANS))
