#!/bin/busybox sh
# /init of the kernel-ipvs guest (tools/kernel-ipvs/kipvs builds it into the initramfs).
#
# Mounts the pseudo file systems, loads the modules listed in /etc/kipvs/modules (in that
# order: crc32c_generic first, so that libcrc32c, which nf_conntrack and ip_vs need, finds a
# crc32c it can use), applies the sysctls given on the kernel command line as
# kipvs.sysctl=KEY=VALUE,KEY=VALUE, brings up lo, then serves the command channel on ttyS1
# for ever. The kernel's console is ttyS0.
#
# Command channel, one request per line, answered in order:
#   host:  ID TIMEOUT BASE64-OF-SCRIPT\n
#   guest: @@OUT ID\n BASE64-OF-OUTPUT (stdout and stderr together) @@END ID EXIT-STATUS\n
# The script runs under `sh` (after /etc/kipvs/profile) with stdin from /dev/null and a time
# limit of TIMEOUT seconds (exit status 137 when it is killed). Base64 both ways keeps the
# tty's line discipline out of the way, whatever the bytes. A request whose ID is the one
# just served is not run again: its answer is sent again (the host resends a request that
# got no answer, not knowing whether the request or the answer was lost). Empty lines are
# skipped (the host starts each request with one, ending any partial line left over).

export PATH=/sbin:/usr/sbin:/bin:/usr/bin
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /var/run /var/lib /root
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run

while read -r m; do
    [ -n "$m" ] || continue
    modprobe "$m" || echo "kipvs: modprobe $m failed"
done </etc/kipvs/modules

for arg in $(cat /proc/cmdline); do
    case $arg in
    kipvs.sysctl=*)
        for kv in $(echo "${arg#kipvs.sysctl=}" | tr ',' ' '); do
            sysctl -w "$kv" || echo "kipvs: sysctl $kv failed"
        done
        ;;
    esac
done
# busybox's shell runs its own applets before anything on PATH: make the real programs
# (iproute2's ip, --with extras) win in every script the channel runs.
for f in /sbin/* /usr/sbin/* /usr/bin/*; do
    [ -f "$f" ] && [ ! -L "$f" ] && echo "${f##*/}() { $f \"\$@\"; }"
done >/etc/kipvs/profile
/sbin/ip link set lo up

echo "kipvs: $(uname -r) up; ip_vs $(cat /proc/net/ip_vs 2>/dev/null | head -1)"

serve() {
    stty -F /dev/ttyS1 raw -echo
    exec </dev/ttyS1 >/dev/ttyS1 2>&1
    echo "@@READY"
    while read -r id limit payload; do
        [ -n "$id" ] || continue
        # The ID served last lives in a file, not a variable: it must survive the channel
        # being reopened, or a request whose answer was lost would run twice.
        last=$(cat /tmp/kipvs-last 2>/dev/null)
        if [ "$id" = "$last" ]; then
            echo "kipvs: request $id again: its kept answer sent again" >/dev/console
            rc=$(cat /tmp/kipvs-rc)
        else
            echo "$payload" | base64 -d >/tmp/kipvs-cmd 2>/dev/null
            timeout -s KILL "$limit" sh -c '. /etc/kipvs/profile; . /tmp/kipvs-cmd' \
                </dev/null >/tmp/kipvs-out 2>&1
            rc=$?
            echo "$rc" >/tmp/kipvs-rc
            echo "$id" >/tmp/kipvs-last
        fi
        echo "@@OUT $id"
        base64 </tmp/kipvs-out
        echo "@@END $id $rc"
    done
}

while true; do
    serve
    echo "kipvs: command channel closed; reopening" >/dev/console
    sleep 1
done
