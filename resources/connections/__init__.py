"""Connections: the file interface and its kinds (folder, SFTP, FTP, SMB, S3), SMTP, SQL sources."""
