#!/usr/bin/env bash
# A master and two worker "hosts" on this machine, to try by hand (needs root and iproute2).
#
# Each host is a network namespace joined to the master by a bridge on a private /24 that
# exists only here, with its own mount namespace in which the share sits at a path of its own
# (/mnt/logs-a on host-a, /srv/share on host-b). The sample logs are copied in, counted, and
# the summary printed; then everything is taken down again, also on Ctrl-C or an error.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "cluster-demo: run as root (it creates namespaces)" >&2; exit 2; }
command -v ip >/dev/null || { echo "cluster-demo: needs iproute2 (ip)" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || { echo "cluster-demo: run 'make demo' first (it creates .venv)" >&2; exit 2; }

subnet=10.231.250
tag=$$
work=$(mktemp -d /tmp/logdispatch-cluster.XXXXXX)
bridge=ldbr$tag
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for host in a b; do
        ip netns del "ld$tag$host" 2>/dev/null || true
        ip link del "ldv$tag$host" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/share" "$work/state"
head -c 32 /dev/urandom | base64 > "$work/key"
chmod 600 "$work/key"

ip link add "$bridge" type bridge
ip addr add "$subnet.1/24" dev "$bridge"
ip link set "$bridge" up
i=10
for host in a b; do
    ns=ld$tag$host
    ip netns add "$ns"
    ip link add "ldv$tag$host" type veth peer "ldp$tag$host"
    ip link set "ldv$tag$host" master "$bridge" up
    ip link set "ldp$tag$host" netns "$ns"
    ip netns exec "$ns" ip addr add "$subnet.$i/24" dev "ldp$tag$host"
    ip netns exec "$ns" ip link set "ldp$tag$host" up
    ip netns exec "$ns" ip link set lo up
    i=$((i + 1))
done

echo "== master on $subnet.1, watching $work/share"
"$python" -m dispatcher "$work/share" --address "$subnet.1:50000" --authkey-file "$work/key" \
    --state "$work/state" --settle 1 2> "$work/master.log" &
pids+=($!)
sleep 1

start_host() {  # name, mount point on that host
    local host=$1 mount_point=$2
    mkdir -p "$work/host-$host$mount_point"
    ip netns exec "ld$tag$host" unshare --mount --uts --propagation private sh -c '
        hostname "$1" && mount --bind "$2" "$3" && shift 3 && exec "$@"' \
        enter "host-$host" "$work/share" "$work/host-$host$mount_point" \
        "$python" -m workers --address "$subnet.1:50000" --authkey-file "$work/key" \
        --root "$work/host-$host$mount_point" --processes 2 2> "$work/host-$host.log" &
    pids+=($!)
    echo "== host-$host: worker with the share at $mount_point"
}
start_host a /mnt/logs-a
start_host b /srv/share
sleep 2

echo "== copying sample_logs/ into the share"
cp -r "$repo"/sample_logs/*/ "$work/share/"
for _ in $(seq 60); do
    done_files=$("$python" -c "
import sys; from pathlib import Path; from dispatcher.views import summary
print(summary.build(Path(sys.argv[1]))['totals']['done'])" "$work/state" 2>/dev/null || echo 0)
    [ "$done_files" -ge 8 ] && break
    sleep 0.5
done

"$python" -c "import sys; from dispatcher.cli.main import main; sys.exit(main())" \
    summary --state "$work/state"
echo "== which host counted what:"
"$python" -c "import sys; from dispatcher.cli.main import main; sys.exit(main())" \
    summary --state "$work/state" --format csv | cut -d, -f1,6 | column -t -s,
