#!/usr/bin/env bash
# The --prepare half of boot.sh: runs chrooted into the guest's overlay before systemd
# starts. It makes two dmbyok volumes under two customer keys (data on the first, written
# through dmbyok), installs the plugin and the generator where `cmake --install` with
# prefix /usr puts them, writes the crypttab and fstab lines an operator would, the KMS
# settings for systemd-cryptsetup in /etc/dmbyok/cryptsetup.env, and a unit that serves
# the KMS emulator on the guest's loopback before network-online.target (the KMS is "on
# the network"). The second key's Decrypt calls hang (an emulator fault kept in its state
# file): that volume's unit must fail within the plugin's bound while the boot goes on.
. "$DMBYOK_SOURCE_DIR/tests/lifecycle/lib.sh"
[ "$(cat /proc/1/comm)" != systemd ] || fail "run by tests/vm/run --prepare, before systemd"
read -r DATA DOWN _ <<<"$VM_DISKS"
KMS_PORT=8399 # fixed: the boot's unit serves the same emulator state on it
MNT=$WORK/mnt
mkdir -p "$MNT"

step "two dmbyok volumes under two keys, data written through dmbyok"
KMS_LISTEN=127.0.0.1:$KMS_PORT start_kms
create_key alias/boot >/dev/null
DOWN_KEY=$(create_key alias/boot-down)
$DMBYOK format "$DATA" --key alias/boot --quiet >/dev/null || fail "format $DATA"
$DMBYOK format "$DOWN" --key alias/boot-down --quiet >/dev/null || fail "format $DOWN"
$DMBYOK open "$DATA" prep --quiet || fail "open $DATA"
mkfs.ext4 -q /dev/mapper/prep
mount /dev/mapper/prep "$MNT"
echo "written through dmbyok before the boot" >"$MNT/hello"
umount "$MNT"
$DMBYOK close prep --quiet || fail "close"
# Every Decrypt under the second key: accepted, never answered (60 s, then closed).
curl -sS --fail -X POST "$KMS_URL/_emulator/faults" -d "{\"operation\":\"Decrypt\",\"fault\":\"timeout\",\"latency_ms\":60000,\"count\":-1,\"key_id\":\"$DOWN_KEY\"}" >/dev/null ||
	fail "cannot set the emulator's fault"
stop_kms

step "install the plugin and the generator as the package would"
# Where src/plugin/CMakeLists.txt's install() rules put them with CMAKE_INSTALL_PREFIX=/usr:
# the plugin in libcryptsetup's own directory (as the build found it), the generator in
# systemd's.
TOKENS_DIR=$(sed -n 's/^DMBYOK_CRYPTSETUP_TOKENS_DIR:PATH=//p' "$DMBYOK_BUILD_DIR/CMakeCache.txt")
[ -d "$TOKENS_DIR" ] || fail "no token plugin directory \"$TOKENS_DIR\" in the build's cache"
install -m 0644 "$DMBYOK_BUILD_DIR/src/plugin/libcryptsetup-token-dmbyok.so" "$TOKENS_DIR/"
install -m 0755 "$DMBYOK_SOURCE_DIR/systemd/dmbyok-cryptsetup-generator" \
	/usr/lib/systemd/system-generators/

step "crypttab, fstab and the KMS settings, as an operator writes them"
DATA_UUID=$(cryptsetup luksUUID "$DATA")
DOWN_UUID=$(cryptsetup luksUUID "$DOWN")
cat >/etc/crypttab <<EOF
bootdata UUID=$DATA_UUID none luks,_netdev,headless=1,nofail
bootdown UUID=$DOWN_UUID none luks,_netdev,headless=1,nofail
EOF
mkdir -p /srv/bootdata
echo "/dev/mapper/bootdata /srv/bootdata ext4 _netdev,nofail 0 0" >>/etc/fstab
mkdir -p /etc/dmbyok
cat >/etc/dmbyok/cryptsetup.env <<EOF
AWS_ENDPOINT_URL_KMS=http://127.0.0.1:$KMS_PORT
AWS_EC2_METADATA_DISABLED=true
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
EOF
chmod 0600 /etc/dmbyok/cryptsetup.env

step "the KMS emulator as a unit, up before network-online.target"
cat >/etc/systemd/system/dmbyok-test-kms.service <<EOF
[Unit]
Description=KMS emulator for the boot test (stands in for the network's KMS)
DefaultDependencies=no
Before=network-online.target
[Service]
ExecStart=$EMULATOR --listen 127.0.0.1:$KMS_PORT --state $WORK/kms.json --audit-log $WORK/audit.log
ExecStartPost=/bin/sh -c 'until curl -sf http://127.0.0.1:$KMS_PORT/_emulator/health >/dev/null; do sleep 0.2; done'
TimeoutStartSec=120
[Install]
WantedBy=network-online.target
EOF
systemctl enable dmbyok-test-kms.service 2>/dev/null || fail "systemctl enable (offline)"
# The test's dmbyok.target stands in for multi-user.target, which on Debian wants
# remote-fs.target (enabled by its postinst); remote-cryptsetup.target is not enabled.
mkdir -p /etc/systemd/system/dmbyok.target.wants
ln -sf /lib/systemd/system/remote-fs.target /etc/systemd/system/dmbyok.target.wants/
echo "boot-prepare: bootdata=$DATA ($DATA_UUID), bootdown=$DOWN ($DOWN_UUID), KMS on :$KMS_PORT"
