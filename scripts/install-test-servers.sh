#!/usr/bin/env bash
# Installs the server programs the integration tests start on loopback, if missing:
# OpenSSH (SFTP), Samba (SMB), GnuPG (sealed files) and Chromium (the web UI test).
# FTP, S3 and SMTP servers are Python.
set -euo pipefail
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
[ -x /usr/sbin/smbd ] || missing+=(samba)
command -v gpg >/dev/null || missing+=(gnupg)
command -v unzip >/dev/null || missing+=(unzip)  # tests check zips with the unzip program
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the web UI test's headless browser
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${missing[*]}; install them (apt-get install ${missing[*]}) or tests will skip" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
