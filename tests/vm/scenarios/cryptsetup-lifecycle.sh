#!/usr/bin/env bash
# Proves the VM harness with stock cryptsetup on real dm-crypt: LUKS2 format, open, ext4,
# write 32 MiB with fsync, suspend (the key leaves the kernel), resume, verify, close.
# Needs one disk: tests/vm/run cryptsetup-lifecycle.sh --disk 256M
set -euo pipefail

die() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }

disk=${VM_DISKS%% *}
[ -b "$disk" ] || die "no disk attached (run with --disk 256M)"
name=lifecycle
key=$VM_SCRATCH/luks.key
mnt=$VM_SCRATCH/mnt
head -c 64 /dev/urandom >"$key"
mkdir -p "$mnt"

step "luksFormat $disk (LUKS2, pbkdf2 with 1000 iterations)"
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
	--cipher aes-xts-plain64 --key-size 512 --key-file "$key" "$disk"
cryptsetup isLuks --type luks2 "$disk" || die "$disk is not LUKS2 after luksFormat"

step "open"
cryptsetup open --key-file "$key" "$disk" "$name"
dev=/dev/mapper/$name
[ -b "$dev" ] || die "$dev missing after open"
dmsetup table "$name" | grep -q ' crypt aes-xts-plain64 ' || die "dm table is not aes-xts-plain64: $(dmsetup table "$name")"

step "mkfs.ext4 and mount"
mkfs.ext4 -q "$dev"
mount "$dev" "$mnt"

step "write 32 MiB with fsync"
head -c 32M /dev/urandom >"$VM_SCRATCH/data"
want=$(sha256sum <"$VM_SCRATCH/data")
dd if="$VM_SCRATCH/data" of="$mnt/data" bs=1M conv=fsync status=none
rm -f "$VM_SCRATCH/data"
umount "$mnt"

step "luksSuspend"
cryptsetup luksSuspend "$name"
dmsetup info "$name" | grep -Eq '^State:[[:space:]]+SUSPENDED' || die "not SUSPENDED after luksSuspend: $(dmsetup info "$name")"
table=$(dmsetup table --showkeys "$name")
# A crypt table line: start len crypt cipher KEY iv_offset device offset. Suspended, the key
# is wiped (zeros or '-'); a ':size:logon:desc' field names a keyring key, not key material.
keyfield=$(awk '{ print $5 }' <<<"$table")
case $keyfield in
:*:logon:*) ;;
*) [[ $keyfield =~ ^(-|0+)$ ]] || die "the key is still in the table after luksSuspend" ;;
esac
echo "table while suspended: key field '${keyfield:0:16}...' (wiped)"

step "luksResume"
cryptsetup luksResume --key-file "$key" "$name"
dmsetup info "$name" | grep -Eq '^State:[[:space:]]+ACTIVE' || die "not ACTIVE after luksResume: $(dmsetup info "$name")"

step "remount and verify"
mount "$dev" "$mnt"
got=$(sha256sum <"$mnt/data")
[ "$got" = "$want" ] || die "checksum mismatch after suspend/resume: $got != $want"
umount "$mnt"

step "close"
cryptsetup close "$name"
[ ! -e "$dev" ] || die "$dev still exists after close"
dmsetup ls | grep -q "^$name" && die "$name still in dmsetup ls after close"
echo "cryptsetup lifecycle: ok"
