"""sftp-provisioner: GitOps provisioning of SFTP batch channels for a social-security gateway."""

__version__ = "0.1.0"
