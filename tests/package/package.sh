#!/usr/bin/env bash
# dmbyok's Debian package (scripts/package, docs/packaging.md) as an administrator uses it,
# in the test VM with systemd as PID 1 over a writable overlay of the host's root
# (tests/vm/run --systemd); the .deb is in DMBYOK_DEB_DIR (built by the package-deb test):
#  1. in a chroot without systemd, as the boot tests install it before booting: dpkg -i
#     enables the agent, starts nothing, fails on nothing; dpkg -P then leaves no file;
#  2. on the running system, configured for the KMS: dpkg -i without a dependency problem;
#     the files where Debian wants them; the agent enabled and started by the postinst under
#     systemd; it watches a volume opened with the installed dmbyok; man pages, catalog;
#  3. an upgrade's maintainer scripts: prerm leaves the agent running, postinst restarts it;
#  4. dpkg -r: agent stopped, units, binaries, catalog entries gone, /etc/dmbyok kept, the
#     open volume still open;
#  5. dpkg -P: /etc/dmbyok gone, dpkg forgets the package, the file system as before the
#     installation; the purge script is idempotent.
. "$DMBYOK_SOURCE_DIR/tests/lifecycle/lib.sh"
[ "$(cat /proc/1/comm)" = systemd ] || fail "run with tests/vm/run --systemd"
# The installed tools use their own default runtime directory, /run/dmbyok.
unset DMBYOK_RUNTIME_DIR
debs=("${DMBYOK_DEB_DIR:?DMBYOK_DEB_DIR not set}"/dmbyok_*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "want one dmbyok_*.deb in $DMBYOK_DEB_DIR: ${debs[*]}"
DEB=${debs[0]}
echo "package: $DEB"
dpkg-deb -e "$DEB" "$WORK/control" # its maintainer scripts, run by hand in steps 3 and 5
# script NAME ARGS...: a maintainer script as dpkg runs it (deb-systemd-helper insists).
script() { DPKG_MAINTSCRIPT_PACKAGE=dmbyok DPKG_MAINTSCRIPT_NAME=$1 "$WORK/control/$@"; }
UNIT=dmbyokd.service
DISK=${VM_DISKS%% *}
n_ids=$(grep -c '^#define DMBYOK_MESSAGE_' "$DMBYOK_SOURCE_DIR/include/dmbyok/message-ids.h")

# dpkg_ok ARGS...: dpkg must succeed and report no dependency problem.
dpkg_ok() {
	local rc=0
	"$@" >"$WORK/dpkg.out" 2>&1 || rc=$?
	if [ $rc -ne 0 ] || grep -qiE 'dependency problems|depends on .* (not installed|however)|error' "$WORK/dpkg.out"; then
		cat "$WORK/dpkg.out" >&2
		return 1
	fi
}
# Where the live system's leftovers would be: what the maintainer scripts touch (systemd's
# and udev's configuration, deb-systemd-helper's state); the package's own paths are checked
# one by one after the purge. Step 1 compares everything, through the chroot's overlay
# (walking /etc, /var and /usr here would cost minutes over 9p under TCG).
snapshot() { find /etc/systemd /etc/udev /var/lib/systemd/deb-systemd-helper-enabled | sort; }
# The package's directories that exist before it is installed (it must leave them).
dpkg-deb -c "$DEB" | awk '$1 ~ /^d/ { sub(/^\.\/?/, "/", $6); print $6 }' | sed 's|/$||' | grep . |
	while read -r d; do if [ -d "$d" ]; then echo "$d"; fi; done | sort >"$WORK/dirs-before"
dmbyok_catalog_entries() { journalctl --list-catalog 2>/dev/null | grep -c ' dmbyok: ' || true; }

# dpkg reads its whole file database (~150k paths) over 9p on its first run: warm the page
# cache while the KMS emulator starts. man-db's index is not the package's business: its
# trigger would re-scan the manual pages at each dpkg run (the harness masks its timer too).
cat /var/lib/dpkg/info/*.list >/dev/null &
WARM=$!
rm -f /var/lib/man-db/auto-update
# A booted Debian system has no policy-rc.d; the host's, if it is a container image's, says
# "exit 101" to every start. Step 3 puts such a one back to see the postinst obey it.
printf '#!/bin/sh\nexit 101\n' >"$WORK/policy-rc.d"
chmod +x "$WORK/policy-rc.d"
rm -f /usr/sbin/policy-rc.d
start_kms
KEY=$(create_key alias/pkg)
wait $WARM

step "the file system before the package"
snapshot >"$WORK/before"
echo "$(wc -l <"$WORK/before") paths"
check "dmbyok is not installed" bash -c "! dpkg-query -W dmbyok 2>/dev/null"

step "1. dpkg -i and -P in a chroot without systemd (how a system image gets the package)"
R=$VM_SCRATCH/chroot
mkdir -p "$R" "$R.upper" "$R.work"
mount -t overlay overlay -o "lowerdir=/,upperdir=$R.upper,workdir=$R.work" "$R"
mount -t proc proc "$R/proc" && mount -t sysfs sysfs "$R/sys" && mount --bind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/run" && mount -t tmpfs tmpfs "$R/tmp"
cp "$DEB" "$R/tmp/"
check "no systemd runs in the chroot (/run/systemd/system absent)" test ! -e "$R/run/systemd/system"
check "dpkg -i in the chroot succeeds, no dependency problem" \
	dpkg_ok chroot "$R" dpkg -i "/tmp/$(basename "$DEB")"
check "the agent is enabled there (multi-user.target.wants)" \
	test -L "$R/etc/systemd/system/multi-user.target.wants/$UNIT"
check "systemctl agrees (offline): enabled" bash -c "[ \"\$(chroot '$R' systemctl is-enabled $UNIT)\" = enabled ]"
check "nothing was started: no dmbyokd process" bash -c "! pgrep -x dmbyokd"
check "the running system saw nothing of it" bash -c "[ \"\$(systemctl show -P LoadState $UNIT)\" = not-found ]"
check "the chroot's journal catalog has dmbyok's $n_ids entries" \
	bash -c "[ \$(chroot '$R' journalctl --list-catalog | grep -c ' dmbyok: ') -eq $n_ids ]"
check "dpkg -P in the chroot succeeds" dpkg_ok chroot "$R" dpkg -P dmbyok
check "the enablement is gone" test ! -e "$R/etc/systemd/system/multi-user.target.wants/$UNIT"
# Every change the chroot made is in the overlay's upper directory: once purged, only dpkg's
# records and logs, trigger-rebuilt caches, directories copied up and deletions remain.
(cd "$R.upper" && find . -mindepth 1 \( -path ./var/lib/dpkg -o -path ./var/log \
	-o -path ./var/cache/man -o -path ./var/lib/systemd/catalog -o -path ./tmp -o -path ./run \) -prune -o \
	\( -type f -o -type l -o -type d \) -print) | sed 's|^\.||' | while read -r p; do
	if [ -d "$R.upper$p" ] && [ ! -L "$R.upper$p" ]; then
		[ -d "$p" ] || echo "$p/"  # a directory that did not exist before
	else
		echo "$p"
	fi
done >"$WORK/chroot-left"
check "the chroot's purge left no file and no directory behind" \
	bash -c "[ ! -s '$WORK/chroot-left' ] || { cat '$WORK/chroot-left'; false; }"
umount -R "$R"

step "2. dpkg -i on the running system, configured for the customer's KMS"
mkdir -p /etc/dmbyok
cat >/etc/dmbyok/dmbyokd.env <<EOF
AWS_ENDPOINT_URL_KMS=$KMS_URL
AWS_REGION=us-east-1
AWS_EC2_METADATA_DISABLED=true
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
DMBYOKD_OPTIONS=--check-interval 2
EOF
check "dpkg -i succeeds, no dependency problem" dpkg_ok dpkg -i "$DEB"
echo "--- dpkg -i took $(elapsed) s since the start (postinst: $(systemctl show -P ExecMainStartTimestamp $UNIT) agent start)"
check "dpkg: install ok installed" bash -c "[ \"\$(dpkg-query -W -f='\${Status}' dmbyok)\" = 'install ok installed' ]"
check "dpkg --audit finds nothing" bash -c "[ -z \"\$(dpkg --audit dmbyok)\" ]"
dpkg -L dmbyok >"$WORK/files"
has() { grep -qxF "$1" "$WORK/files" || { echo "not in dpkg -L: $1" >&2; return 1; }; }
check "binaries in /usr/sbin" bash -c "$(declare -f has); WORK=$WORK; has /usr/sbin/dmbyok && has /usr/sbin/dmbyokd"
expected=()
for f in "$DMBYOK_SOURCE_DIR"/systemd/*.{service,socket,timer,path,target}; do
	[ -f "$f" ] && expected+=("/lib/systemd/system/$(basename "$f")")
done
for f in "$DMBYOK_SOURCE_DIR"/udev/*.rules; do
	[ -f "$f" ] && expected+=("/lib/udev/rules.d/$(basename "$f")")
done
for f in "$DMBYOK_SOURCE_DIR"/man/*.[1-9]; do
	expected+=("/usr/share/man/man${f##*.}/$(basename "$f").gz")
done
expected+=(/usr/lib/systemd/catalog/dmbyok.catalog /usr/share/doc/dmbyok/copyright
	/usr/share/doc/dmbyok/changelog.gz /usr/share/doc/dmbyok/README.md
	/usr/share/doc/dmbyok/dmbyokd.conf.example)
missing=0
for f in "${expected[@]}"; do has "$f" || missing=1; done
# The token plugin: where libcryptsetup loads it from, /lib/<multiarch>/cryptsetup (Debian's
# systemd puts its own in /usr/lib/..., the same directory after usrmerge).
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
if [ -f "$DMBYOK_SOURCE_DIR/src/plugin/CMakeLists.txt" ]; then
	expected+=(libcryptsetup-token-dmbyok.so)
	grep -qxE "(/usr)?/lib/$MULTIARCH/cryptsetup/libcryptsetup-token-dmbyok.so" "$WORK/files" ||
		{ echo "not in dpkg -L: the token plugin" >&2; missing=1; }
fi
# Generators: Debian 12's systemd reads /lib/systemd/system-generators, the same directory as
# /usr/lib/... after usrmerge (src/plugin installs them).
for f in "$DMBYOK_SOURCE_DIR"/systemd/*-generator; do
	[ -f "$f" ] || continue
	expected+=("$(basename "$f")")
	grep -qxE "(/usr)?/lib/systemd/system-generators/$(basename "$f")" "$WORK/files" || { echo "not in dpkg -L: $f" >&2; missing=1; }
done
check "units, udev rules, generators, man pages (gzip'd), catalog, docs: ${#expected[@]} paths where Debian wants them" test $missing -eq 0
check "nothing outside /usr, /lib/{systemd,udev,$MULTIARCH/cryptsetup} and /etc; nothing in /usr/local or /usr/lib/systemd/system" \
	bash -c "! grep -vE '^/(\.|usr|usr/.*|lib|lib/systemd(/.*)?|lib/udev(/.*)?|lib/$MULTIARCH(/cryptsetup(/.*)?)?|etc(/.*)?)$' '$WORK/files' &&
		! grep -qE '^/usr/local|^/usr/lib/systemd/system/' '$WORK/files'"
check "every file of the package exists" bash -c "while read -r f; do [ -e \"\$f\" ] || { echo \"missing: \$f\"; exit 1; }; done <'$WORK/files'"
check "systemctl is-enabled $UNIT: enabled" bash -c "[ \"\$(systemctl is-enabled $UNIT)\" = enabled ]"
active() { systemctl is-active --quiet $UNIT || { systemctl status $UNIT --no-pager; journalctl -u $UNIT --no-pager | tail -n 20; false; }; }
check "the postinst started the agent: active (READY)" active
check "as /usr/sbin/dmbyokd, under systemd" bash -c "[ \"\$(systemctl show -P ExecMainStatus $UNIT)\" = 0 ] &&
	[ \"\$(readlink /proc/\$(systemctl show -P MainPID $UNIT)/exe)\" = /usr/sbin/dmbyokd ]"
check "man -w dmbyok finds the page" bash -c "[ \"\$(man -w dmbyok)\" = /usr/share/man/man8/dmbyok.8.gz ]"
check "man -w dmbyokd too" bash -c "[ \"\$(man -w dmbyokd)\" = /usr/share/man/man8/dmbyokd.8.gz ]"
check "journalctl --list-catalog has dmbyok's $n_ids entries" test "$(dmbyok_catalog_entries)" -eq "$n_ids"

step "the installed tools: a volume opened with /usr/sbin/dmbyok, watched by the agent"
check "dmbyok format" dmbyok format "$DISK" --key alias/pkg --quiet
check "dmbyok open" dmbyok open "$DISK" pkgvol --quiet
probed() { dmbyok status pkgvol --json | jq -e '.state == "active" and .agent.state == "active" and .agent.last_probe_class == "ok"'; }
t=$(wait_for 60 probed) || { dmbyok status pkgvol; journalctl -u $UNIT --no-pager | tail -n 20; fail "the agent never probed pkgvol's key"; }
ok "dmbyok status: the agent watches pkgvol, its key probed at the KMS of dmbyokd.env (${t} s)"
echo "--- the agent's status line: $(systemctl show -P StatusText $UNIT)"

step "3. an upgrade's maintainer scripts (what dpkg -i of a newer version runs)"
pid=$(systemctl show -P MainPID $UNIT)
check "prerm upgrade succeeds" script prerm upgrade 0.1.0
check "and leaves the agent running (same process)" bash -c "systemctl is-active --quiet $UNIT && [ \$(systemctl show -P MainPID $UNIT) = $pid ]"
cp "$WORK/policy-rc.d" /usr/sbin/policy-rc.d
check "postinst configure 0.1.0 under a policy-rc.d that forbids starts succeeds" script postinst configure 0.1.0
check "and obeys it: the agent was not restarted" bash -c "[ \$(systemctl show -P MainPID $UNIT) = $pid ]"
rm /usr/sbin/policy-rc.d
check "postinst configure 0.1.0 succeeds" script postinst configure 0.1.0
check "and restarted the agent (new process, active)" bash -c "$(declare -f active); UNIT=$UNIT; active && [ \$(systemctl show -P MainPID $UNIT) != $pid ]"
check "still enabled" bash -c "[ \"\$(systemctl is-enabled $UNIT)\" = enabled ]"
t=$(wait_for 60 probed) || fail "the restarted agent does not watch pkgvol"
ok "the restarted agent adopted pkgvol (${t} s)"

step "4. dpkg -r"
check "dpkg -r succeeds" dpkg_ok dpkg -r dmbyok
check "dpkg: deinstall ok config-files" bash -c "[ \"\$(dpkg-query -W -f='\${Status}' dmbyok)\" = 'deinstall ok config-files' ]"
check "the agent is stopped: no dmbyokd process" bash -c "! systemctl is-active --quiet $UNIT && ! pgrep -x dmbyokd"
check "it stopped cleanly (journal: deactivated successfully)" \
	bash -c "journalctl --sync && journalctl -u $UNIT --no-pager -o cat | tail -n 5 | grep -q 'Deactivated successfully'"
check "systemd no longer knows the unit" bash -c "[ \"\$(systemctl show -P LoadState $UNIT)\" = not-found ]"
check "no file of the package is left" bash -c "while read -r f; do [ -d \"\$f\" ] || [ ! -e \"\$f\" ] || { echo \"left: \$f\"; exit 1; }; done <'$WORK/files'"
check "the journal catalog has no dmbyok entry" test "$(dmbyok_catalog_entries)" -eq 0
check "the configuration is kept: /etc/dmbyok/dmbyokd.env" test -f /etc/dmbyok/dmbyokd.env
check "the open volume stays open" dmsetup info pkgvol
check "close it (this build's dmbyok)" "$DMBYOK" close pkgvol --quiet

step "5. dpkg -P"
check "dpkg -P succeeds" dpkg_ok dpkg -P dmbyok
check "/etc/dmbyok is gone" test ! -e /etc/dmbyok
check "dpkg -l shows nothing" bash -c "! dpkg -l dmbyok >/dev/null 2>&1 && ! dpkg -l | grep -qw dmbyok"
check "the enablement is gone" test ! -e "/etc/systemd/system/multi-user.target.wants/$UNIT"
snapshot >"$WORK/after"
check "systemd's and udev's configuration and deb-systemd-helper's state are as before" \
	diff "$WORK/before" "$WORK/after"
check "of the package's paths, only directories that were there before remain" \
	bash -c "while read -r f; do [ \"\$f\" != /. ] && [ -e \"\$f\" ] || continue; grep -qxF \"\$f\" '$WORK/dirs-before' ||
		{ echo \"left: \$f\"; exit 1; }; done <'$WORK/files'"
check "postrm purge again (idempotent) succeeds" script postrm purge
snapshot >"$WORK/after2"
check "and changes nothing" diff "$WORK/before" "$WORK/after2"
stop_kms
finish
