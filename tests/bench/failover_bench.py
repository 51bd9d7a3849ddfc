#!/usr/bin/env python3
"""Benchmark: failover of the load-balancer pair, for real, in network namespaces.

Not a test. Rerun (as root) with:  venv/bin/python tests/bench/failover_bench.py [--repeat 10]

Builds the same namespace topology as tests/test_lb_failover.py (tests/support/lbnet.py:
rendered haproxy.cfg / keepalived.conf of the dev stack grown to 3 servers and
2 ingress agents), then repeats: SIGKILL haproxy on the MASTER and measure

* vip:    time until both VIPs are on the BACKUP (``ip -n <ns> addr``, polled every 10 ms);
* client: time until a client connection to API_VIP:6443 is answered through
          the BACKUP's haproxy (one attempt every --interval s, --timeout s each);
* failed: client attempts that failed in between;

then restarts the MASTER's haproxy and measures the failback (preempt) the
same way before the next round. Prints each round, then median and max.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from support.harness import stack_model  # noqa: E402
from support.lbnet import LbNet, lb_test_model, wait_for  # noqa: E402


def move(net: LbNet, to: str, act, interval: float, timeout: float, limit: float = 30.0) -> dict:
    """Run ``act`` (which makes the VIPs move to ``to``) and time the move from the VIPs' and a client's view."""
    both = {net.api_vip, net.ingress_vip}
    port = net.cfg.load_balancer.api_port
    via = net.ip[to]
    seen: dict[str, float] = {}
    stop = threading.Event()

    def poll_vips(t0: float) -> None:
        while not stop.is_set() and time.monotonic() - t0 < limit:
            try:
                on = net.vips_on(to)
            except Exception:  # the namespaces are going away (interrupted run)
                return
            if on == both:
                seen["vip"] = time.monotonic() - t0
                return
            time.sleep(0.01)

    t0 = time.monotonic()
    act()
    poller = threading.Thread(target=poll_vips, args=(t0,), daemon=True)
    poller.start()
    failed = attempts = 0
    client = None
    try:
        while time.monotonic() - t0 < limit:
            started = time.monotonic()
            a = net.fetch(net.api_vip, port, timeout)
            attempts += 1
            if a is not None and a.via == via:
                client = time.monotonic() - t0
                break
            if a is None:
                failed += 1
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
        poller.join(timeout=limit)
    finally:
        stop.set()
        poller.join(timeout=5)
    return {"vip": seen.get("vip"), "client": client, "failed": failed, "attempts": attempts}


def summary(label: str, values: list) -> str:
    vals = [v for v in values if v is not None]
    if len(vals) != len(values):
        return f"{label:<16} {len(values) - len(vals)} of {len(values)} rounds never completed"
    return f"{label:<16} median {statistics.median(vals):6.2f}   max {max(vals):6.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between client attempts (default 0.05)")
    ap.add_argument("--timeout", type=float, default=0.2, help="per-attempt connect/read timeout (default 0.2)")
    args = ap.parse_args()

    with LbNet(lb_test_model(stack_model("dev"))) as net:
        t = net.timers
        print(
            f"haproxy: inter {t.check_inter:g}s fall {t.check_fall} rise {t.check_rise}; "
            f"keepalived: script interval {t.script_interval:g}s fall {t.script_fall} rise {t.script_rise}, "
            f"advert_int {t.advert_int:g}s, preempt {net.cfg.load_balancer.vrrp.preempt}"
        )
        print(
            f"test bounds (slack 0): failover <= {t.failover_window(0):.1f}s, failback <= {t.recover_window(0):.1f}s; "
            f"client: one attempt per {args.interval * 1000:.0f} ms, timeout {args.timeout * 1000:.0f} ms"
        )
        print(f"{'round':>5} | {'failover: vip':>13} {'client':>7} {'failed':>6} | {'failback: vip':>13} {'client':>7} {'failed':>6}")
        over, back = [], []
        for i in range(1, args.repeat + 1):
            ok, _ = wait_for(lambda: net.vips_on(net.master) == {net.api_vip, net.ingress_vip}, 30)
            assert ok, f"round {i}: {net.master} does not hold the VIPs: {net.holders()}"
            time.sleep(1.0)  # let the backup settle after the last preemption
            o = move(net, net.backup, lambda: net.kill_haproxy(net.master), args.interval, args.timeout)
            b = move(net, net.master, lambda: net.start_haproxy(net.master), args.interval, args.timeout)
            over.append(o)
            back.append(b)

            def f(x):
                return f"{x:6.2f}s" if x is not None else "   n/a "

            print(f"{i:>5} | {f(o['vip']):>13} {f(o['client']):>7} {o['failed']:>6} | {f(b['vip']):>13} {f(b['client']):>7} {b['failed']:>6}")
        print()
        print("failover (SIGKILL haproxy on the MASTER), seconds:")
        print("  " + summary("VIPs on backup", [o["vip"] for o in over]))
        print("  " + summary("client via backup", [o["client"] for o in over]))
        print(f"  failed client attempts per window: median {statistics.median(o['failed'] for o in over):g}, max {max(o['failed'] for o in over)}")
        print("failback (haproxy restarted, preempt), seconds:")
        print("  " + summary("VIPs on master", [b["vip"] for b in back]))
        print("  " + summary("client via master", [b["client"] for b in back]))
        print(f"  failed client attempts per window: median {statistics.median(b['failed'] for b in back):g}, max {max(b['failed'] for b in back)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
