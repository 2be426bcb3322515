#!/usr/bin/env bash
# Proves the guest's crypto is real and accelerated: xts(aes) has an AES-NI driver in
# /proc/crypto and the device mapper knows the crypt target.
set -euo pipefail

die() { echo "FAIL: $*" >&2; exit 1; }

# /proc/crypto: blocks of "name : ...", "driver : ...", "priority : ...", blank line between.
drivers=$(awk -F': ' '/^name/ { name = $2 } /^driver/ && name == "xts(aes)" { print $2 }' /proc/crypto)
echo "xts(aes) drivers: $(tr '\n' ' ' <<<"$drivers")"
grep -qx 'xts-aes-aesni' <<<"$drivers" || die "no xts-aes-aesni driver for xts(aes) in /proc/crypto"
grep -q '^flags.*aes' /proc/cpuinfo || die "the guest CPU does not advertise AES-NI"

targets=$(dmsetup targets)
echo "dm targets: $(awk '{ print $1 }' <<<"$targets" | tr '\n' ' ')"
grep -q '^crypt ' <<<"$targets" || die "dm-crypt is not registered (dmsetup targets has no crypt)"
[ -c /dev/mapper/control ] || die "/dev/mapper/control is missing"
# dm-crypt takes volume keys from the kernel keyring as logon keys.
kid=$(head -c 32 /dev/urandom | keyctl padd logon dmbyok:vm-test @u) || die "cannot add a logon key to the user keyring"
keyctl unlink "$kid" @u >/dev/null || die "cannot unlink logon key $kid"
echo "crypto acceleration: ok"
