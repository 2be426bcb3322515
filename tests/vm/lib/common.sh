# Shared settings for tests/vm/fetch-kernel, tests/vm/run and tests/vm/lib/mkinitramfs.
# Sourced by bash scripts; defines no behaviour on its own.
# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VM_CACHE=${DMBYOK_VM_CACHE:-/var/cache/dmbyok/vm}
# Kernel modules the guest loads at boot (dependencies are resolved from modules.dep).
# Names use either '-' or '_'. A name missing from modules.dep must be built in.
VM_MODULES=(
	virtio_pci virtio_blk virtio_rng
	9p 9pnet_virtio
	crc32c_generic crc32c-intel crc16 ext4
	overlay loop
	dm-mod dm-crypt
	cryptd crypto_simd aesni-intel xts
	af_alg algif_skcipher algif_hash
)

vm_die() { printf '%s: %s\n' "${VM_PROG:-vm}" "$*" >&2; exit 1; }

# Reads the kernel that fetch-kernel unpacked: sets VM_KVER, VM_KROOT, VM_VMLINUZ (the
# image QEMU boots).
vm_load_kernel_info() {
	local info="$VM_CACHE/kernel.info"
	[ -r "$info" ] || return 1
	VM_KVER=$(sed -n 's/^version=//p' "$info")
	VM_KROOT="$VM_CACHE/$VM_KVER"
	VM_VMLINUZ="$VM_KROOT/boot/vmlinuz-$VM_KVER"
	# fetch-kernel's uncompressed ELF copy boots ~2.5 s faster (PVH: no decompression under TCG).
	[ -r "$VM_KROOT/vmlinux.pvh" ] && VM_VMLINUZ="$VM_KROOT/vmlinux.pvh"
	[ -n "$VM_KVER" ] && [ -r "$VM_VMLINUZ" ] && [ -r "$VM_KROOT/lib/modules/$VM_KVER/modules.dep" ]
}
