#!/usr/bin/env bash
# Make sure a libvirtd answers on qemu:///system. On a host with systemd this
# only checks; in a container without it, start libvirtd and virtlogd as
# daemons and record their PIDs so whoever started them can stop exactly them.
# Usage: libvirtd.sh start | stop   (stop only stops what start started)
set -euo pipefail
state=${MICROCLOUD_LIBVIRTD_STATE:-/run/microcloud-libvirtd}
uri=qemu:///system

up() { virsh -c "$uri" version >/dev/null 2>&1; }

case "${1:-start}" in
  start)
    if up; then echo "libvirtd: already answering on $uri"; exit 0; fi
    if [ -d /run/systemd/system ]; then
      systemctl start libvirtd virtlogd
    else
      mkdir -p "$state"
      for d in virtlogd libvirtd; do
        if [ ! -s "$state/$d.pid" ] || ! kill -0 "$(cat "$state/$d.pid")" 2>/dev/null; then
          "/usr/sbin/$d" --daemon --pid-file "$state/$d.pid"
        fi
      done
    fi
    for _ in $(seq 1 30); do up && break; sleep 1; done
    up || { echo "libvirtd: did not come up on $uri" >&2; exit 1; }
    echo "libvirtd: started ($uri)"
    ;;
  stop)
    for d in libvirtd virtlogd; do
      if [ -s "$state/$d.pid" ]; then
        pid=$(cat "$state/$d.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        rm -f "$state/$d.pid"
      fi
    done
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
