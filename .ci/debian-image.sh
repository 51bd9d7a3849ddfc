#!/usr/bin/env bash
# Build the Debian 12 (bookworm) cloud image that the end-to-end tests boot
# under libvirt/QEMU, from Debian packages only, and print its path.
#
#   bash .ci/debian-image.sh   ->  stdout: /abs/path/debian12-<hash>.qcow2
#
# The image: one MBR partition (ext4, 2 GiB virtual disk, grown on first boot
# by cloud-init's growpart/resizefs), extlinux as bootloader, the cloud
# kernel with a small initramfs, serial console on ttyS0, cloud-init limited to
# the NoCloud datasource rendering network-config through ifupdown, and every
# package the tests use preinstalled, since the test VMs reach no mirror.
# No password and no user are baked in: cloud-init creates the user.
#
# Cached by the text of this script: any change to it (packages, recipe)
# yields a new file name, and a cache hit only prints the path. Needs root to
# build (mmdebstrap, loop mount); installs the host tools it lacks with apt.
# Packages come from the host's own apt sources (its Debian bookworm entries),
# so the build uses whichever mirror the machine is set up with.
#
#   MICROCLOUD_IMAGE_CACHE   cache directory (default ~/.cache/microcloud-images)
set -euo pipefail
umask 022

SELF=$(realpath "${BASH_SOURCE[0]}")
CACHE=$(realpath -m "${MICROCLOUD_IMAGE_CACHE:-$HOME/.cache/microcloud-images}")
HASH=$(sha256sum "$SELF" | cut -c1-16)
OUT=$CACHE/debian12-$HASH.qcow2

# The fast path: nothing but the hash before answering.
if [[ -f $OUT ]]; then
    printf '%s\n' "$OUT"
    exit 0
fi
# --cached-only: answer whether it is built, never build (the e2e tests ask).
if [[ ${1:-} == --cached-only ]]; then
    echo "debian-image.sh: $OUT is not built" >&2
    exit 1
fi

SUITE=bookworm
DISK_SIZE=2G
PART_OFFSET=$((1024 * 1024))   # first partition at sector 2048, as fdisk would

# In the image. Recommends are off, so everything the VM needs is named here.
PACKAGES=(
    linux-image-cloud-amd64 initramfs-tools
    systemd-sysv udev dbus libpam-systemd  # dbus: hostnamectl, which cloud-init's set_hostname calls
    cloud-init cloud-guest-utils e2fsprogs  # growpart/resizefs on first boot
    openssh-server sudo
    ifupdown isc-dhcp-client iproute2 netbase
    resolvconf                              # applies the dns-nameservers lines of cloud-init's ENI renderer
    locales tzdata                          # tzdata: cloud-init's timezone module needs /usr/share/zoneinfo
    haproxy keepalived chrony qemu-guest-agent
    ca-certificates procps dnsutils iputils-ping
    nftables                                # the node firewall (cloud-init only checks packages on an air-gapped image)
    postgresql-15 postgresql-client-15      # the database node (its day-2 step only checks them here, as on an air-gapped site)
    nfs-kernel-server                       # the storage node's NFS server; nfs-common's mount.nfs4 for the database node
    unattended-upgrades                     # the nodes' unattended updates (their day-2 step only checks it here)
)

# On the host: the builder, the partition/filesystem/bootloader tools, qemu-img.
HOST_PACKAGES=(mmdebstrap qemu-utils extlinux syslinux-common e2fsprogs fdisk mount)

# Loaded from the initramfs to find the root disk (virtio-blk, or virtio-scsi)
# and mount it; the rest comes from /lib/modules after the switch to root.
INITRAMFS_MODULES=(virtio_pci virtio_blk virtio_scsi sd_mod ext4)

log() { printf 'debian-image.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# From here on only the final path goes to the real stdout (fd 3).
exec 3>&1 1>&2

[[ $(id -u) == 0 ]] || die "building needs root (mmdebstrap, loop mount); run it as root"

install_host_packages() {
    local missing=() p
    for p in "${HOST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [[ ${#missing[@]} == 0 ]] && return
    log "installing host packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Unmount, deepest first, whatever is still mounted below $1 (the loop mount
# of the image, or mmdebstrap's /proc and /sys if it was killed).
unmount_below() {
    local m
    findmnt -rn -o TARGET | { grep -F "$1/" || true; } | sort -r | while read -r m; do
        umount -l "$m" || true
    done
}

WORK=$CACHE/.build-$HASH
cleanup() {
    unmount_below "$WORK"
    # --one-file-system: never reach into a mount that could not be undone.
    rm -rf --one-file-system "$WORK"
}

# The host's apt entries for the Debian release we build, nothing else: a
# third-party repository enabled on the host has no business in the image.
# Writes debian.sources (deb822) and debian.list (one-line) into $1; only the
# non-empty ones are printed, for use as mmdebstrap mirror arguments.
host_debian_sources() {
    local dir=$1 f deb822=() oneline=()
    for f in /etc/apt/sources.list.d/*.sources; do [[ -f $f ]] && deb822+=("$f"); done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [[ -f $f ]] && oneline+=("$f"); done
    : >"$dir/debian.sources"
    : >"$dir/debian.list"
    if [[ ${#deb822[@]} -gt 0 ]]; then
        SUITE=$SUITE perl -00 -ne '
            next if /^Enabled:[ \t]*no[ \t]*$/mi;
            my ($types) = /^Types:[ \t]*(.*)$/mi;
            my ($suites) = /^Suites:[ \t]*(.*)$/mi;
            next unless defined $types and grep { $_ eq "deb" } split " ", $types;
            my @keep = grep { /^\Q$ENV{SUITE}\E(-updates|-security)?$/ } split " ", $suites // "";
            next unless @keep;
            s/^Types:.*$/Types: deb/mi;
            s/^Suites:.*$/Suites: @keep/mi;
            s/\n*\z/\n\n/;
            print;
        ' "${deb822[@]}" >"$dir/debian.sources"
    fi
    if [[ ${#oneline[@]} -gt 0 ]]; then
        SUITE=$SUITE perl -ne '
            print if /^\s*deb\s+(\[[^\]]*\]\s+)?\S+\s+\Q$ENV{SUITE}\E(-updates|-security)?\s/;
        ' "${oneline[@]}" >"$dir/debian.list"
    fi
    for f in "$dir/debian.sources" "$dir/debian.list"; do
        [[ -s $f ]] && printf '%s\n' "$f"
    done
    return 0
}

# The files the image gets before its packages are installed, so that the
# kernel's postinst builds the small initramfs once and locales generates
# the right locale; $1 is the overlay directory, $2 the root filesystem UUID.
write_overlay() {
    local o=$1 uuid=$2
    mkdir -p "$o"/etc/{initramfs-tools/conf.d,cloud/cloud.cfg.d,ssh/sshd_config.d,network/interfaces.d,default} \
        "$o"/etc/systemd/system/ssh.service.d "$o"/usr/share/initramfs-tools/modules.d "$o"/boot/extlinux
    # sync-in applies the overlay's own modes to /: keep it 0755.
    chmod 0755 "$o"

    printf 'UUID=%s / ext4 defaults,errors=remount-ro 0 1\n' "$uuid" >"$o/etc/fstab"

    # Only the listed modules (virtio + ext4), not MODULES=dep, which would
    # probe the build host's disk, nor the default "most" (a much larger image).
    # FSTYPE: the fsck hook cannot probe the VM's root disk at build time;
    # named, e2fsck goes into the initramfs and checks root before mounting it.
    cat >"$o/etc/initramfs-tools/conf.d/microcloud.conf" <<'EOF'
MODULES=list
RESUME=none
COMPRESS=gzip
FSTYPE=ext4
EOF
    printf '%s\n' "${INITRAMFS_MODULES[@]}" >"$o/usr/share/initramfs-tools/modules.d/microcloud"

    # Read by the locales package's config script: cloud-init's locale module
    # then finds en_US.UTF-8 in place and skips a slow locale-gen at first boot.
    echo 'en_US.UTF-8 UTF-8' >"$o/etc/locale.gen"
    echo 'LANG=en_US.UTF-8' >"$o/etc/default/locale"

    # NoCloud only: no waiting on metadata services that are not there.
    cat >"$o/etc/cloud/cloud.cfg.d/90-microcloud.cfg" <<'EOF'
datasource_list: [NoCloud, None]
EOF

    # cloud-init's ENI renderer writes interfaces.d/50-cloud-init; ifupdown
    # (networking.service) brings it up. cloud-init checks this exact source line.
    cat >"$o/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
EOF

    cat >"$o/etc/ssh/sshd_config.d/90-microcloud.conf" <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
EOF
    # Host keys are removed from the image so that no two VMs share them.
    # cloud-init makes new ones before sshd starts; this only covers a boot
    # where cloud-init did not run, so that sshd still comes up.
    cat >"$o/etc/systemd/system/ssh.service.d/10-hostkeys.conf" <<'EOF'
[Service]
ExecStartPre=/usr/bin/ssh-keygen -A
EOF

    # /vmlinuz and /initrd.img are the kernel package's symlinks, so a kernel
    # upgrade inside a VM still boots. console=ttyS0 last: it becomes
    # /dev/console, which libvirt's serial console log records.
    cat >"$o/boot/extlinux/extlinux.conf" <<EOF
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
    LINUX /vmlinuz
    INITRD /initrd.img
    APPEND root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8
EOF
}

# Leave nothing host-specific or per-instance in the tree mmdebstrap made.
finish_rootfs() {
    local r=${1:?}
    [[ $r != / && -d $r/etc ]] || die "not a root tree: $r"
    rm -f "$r"/etc/ssh/ssh_host_*
    echo localhost >"$r/etc/hostname"
    printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
    # mmdebstrap copied the host's resolv.conf in; resolvconf keeps a copy as
    # "original". The VM's comes from resolvconf (DHCP or dns-nameservers).
    rm -f "$r/etc/resolv.conf" "$r/etc/resolvconf/resolv.conf.d/original"
    ln -s ../run/resolvconf/resolv.conf "$r/etc/resolv.conf"
    # Holds the host's Acquire settings (proxy, snapshot checks): not the VM's.
    rm -f "$r/etc/apt/apt.conf.d/99mmdebstrap"
    # networking.service runs ifup for cloud-init's interfaces.d file.
    systemctl --root="$r" --quiet enable networking.service ssh.service
    # e2scrub works on LVM snapshots, which the VM has none of; its reaper
    # took 7 s of a 45 s boot without KVM.
    systemctl --root="$r" --quiet disable e2scrub_reap.service e2scrub_all.timer
    # Carried, not running: the program enables what a node's role needs (the NFS server on the
    # storage node, its own PostgreSQL unit on the database node).
    systemctl --root="$r" --quiet disable postgresql.service nfs-server.service
    rm -rf "$r"/var/log/apt/* "$r"/var/log/dpkg.log "$r"/var/log/alternatives.log \
        "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old
}

# Fail the build, not a test VM's boot, when a package or file went missing.
check_rootfs() {
    local r=${1:?} f
    for f in vmlinuz initrd.img usr/bin/cloud-init usr/bin/growpart sbin/sfdisk sbin/resize2fs \
        usr/sbin/sshd usr/bin/sudo usr/sbin/haproxy usr/sbin/keepalived usr/sbin/chronyd \
        sbin/ifup sbin/dhclient sbin/ip sbin/resolvconf usr/sbin/qemu-ga usr/bin/dig usr/bin/ps usr/bin/hostnamectl \
        usr/share/zoneinfo/UTC usr/lib/locale/locale-archive \
        usr/lib/postgresql/15/bin/postgres usr/lib/postgresql/15/bin/initdb usr/bin/psql usr/sbin/exportfs sbin/mount.nfs4; do
        [[ -e $r/$f ]] || die "image lacks /$f"
    done
    grep -q '^root:[*!]' "$r/etc/shadow" || die "root has a password in the image"
    [[ -L $r/etc/systemd/system/multi-user.target.wants/networking.service ]] ||
        die "networking.service is not enabled"
}

build() {
    local root=$WORK/root overlay=$WORK/overlay raw=$WORK/disk.raw mnt=$WORK/mnt
    local uuid sources
    uuid=$(cat /proc/sys/kernel/random/uuid)

    mapfile -t sources < <(host_debian_sources "$WORK")
    [[ ${#sources[@]} -gt 0 ]] || die "no '$SUITE' entry in the host's apt sources"

    # The host's own Acquire settings (proxy, Check-Valid-Until for snapshot
    # mirrors) apply to the download; mmdebstrap would not read them itself.
    apt-config dump | grep -E '^Acquire::(https?::Proxy|Check-Valid-Until|Check-Date)' >"$WORK/host-apt.conf" || true

    write_overlay "$overlay" "$uuid"

    log "mmdebstrap $SUITE from: ${sources[*]}"
    mmdebstrap --variant=minbase --include="${PACKAGES[*]}" \
        --aptopt="$WORK/host-apt.conf" \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --essential-hook="sync-in $overlay /" \
        "$SUITE" "$root" "${sources[@]}"

    finish_rootfs "$root"
    check_rootfs "$root"

    log "making the disk: MBR, one bootable ext4 partition"
    truncate -s "$DISK_SIZE" "$raw"
    echo "start=$((PART_OFFSET / 512)), type=83, bootable" | sfdisk -q "$raw"
    local part_bytes=$(($(stat -c %s "$raw") - PART_OFFSET))
    # Filled straight from the tree (-d), no copy through a mount.
    mkfs.ext4 -q -L rootfs -U "$uuid" -d "$root" -E "offset=$PART_OFFSET" "$raw" "$((part_bytes / 1024))k"

    # extlinux needs the filesystem mounted to find its own blocks; a loop
    # mount at the partition's offset avoids partition devices altogether.
    mkdir -p "$mnt"
    mount -o "loop,offset=$PART_OFFSET" "$raw" "$mnt"
    extlinux --install "$mnt/boot/extlinux" 2>&1
    umount "$mnt"
    dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none

    log "converting to compressed qcow2"
    qemu-img convert -c -O qcow2 "$raw" "$WORK/image.qcow2"
    qemu-img check -q "$WORK/image.qcow2"
    mv -f "$WORK/image.qcow2" "$OUT"
}

mkdir -p "$CACHE"
# One build per image: a second run waits here, then finds the result.
exec 9>"$CACHE/.debian12-$HASH.lock"
flock 9
if [[ -f $OUT ]]; then
    printf '%s\n' "$OUT" >&3
    exit 0
fi

install_host_packages
# A build killed hard (SIGKILL) leaves its work dir behind; we hold the lock.
cleanup
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK"
start=$SECONDS
build
log "built $OUT ($(du -h "$OUT" | cut -f1)) in $((SECONDS - start)) s"
printf '%s\n' "$OUT" >&3
