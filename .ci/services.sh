#!/bin/sh
# Prepare what the profile tests need: an OpenSSH server binary for tests/sshd.py (the tests start
# their own sshd on loopback with throwaway keys; nothing is configured system-wide) and the
# privilege-separation folder sshd wants when run as root. Idempotent; call it before pytest:
#   sh .ci/services.sh
set -eu
if ! [ -x /usr/sbin/sshd ] && ! command -v sshd >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends openssh-server openssh-client
    else
        echo "services.sh: no sshd and no apt-get: the SSH tests will be skipped" >&2
    fi
fi
if [ "$(id -u)" -eq 0 ]; then
    mkdir -p /run/sshd && chmod 0755 /run/sshd
fi
command -v ssh >/dev/null 2>&1 && ssh -V 2>&1 || echo "services.sh: no ssh client" >&2
