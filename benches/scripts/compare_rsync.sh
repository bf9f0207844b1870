#!/usr/bin/env bash
# Dyad's Sync Now beside the tools operators would use instead, on the same bytes, same run:
#   - rsync -a over ssh (aes128-gcm@openssh.com) to a private sshd on 127.0.0.1;
#   - rsync -a between two local folders;
#   - dyad: two `dyad serve` on loopback, establish, `dyad sync-now` (every chunk verified and
#     fsynced before it is published).
# Targets: dyad >= 2x rsync over ssh, >= 1.2x local rsync.
#
# Usage: benches/scripts/compare_rsync.sh [TOTAL_MIB] [FILES]   (default 2048 MiB in 8 files)
# Installs rsync and openssh-server from the distribution when missing (needs root), starts the
# private sshd on a free port and stops it at the end; everything lives in a temporary folder
# under ${DYAD_BENCH_DIR:-/tmp} and is removed.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOTAL_MIB="${1:-2048}"
FILES="${2:-8}"
BASE="${DYAD_BENCH_DIR:-/tmp}"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need rsync || ! [ -x /usr/sbin/sshd ] || ! need ssh; then
    echo "installing rsync and openssh (server and client)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq rsync openssh-server openssh-client >/dev/null
fi

cargo build --release -q -p dyad --bin dyad
DYAD="${CARGO_TARGET_DIR:-$PWD/target}/release/dyad"

WORK="$(mktemp -d "$BASE/dyad-rsync-XXXXXX")"
SSHD_PID=""
SERVE_PIDS=()
cleanup() {
    [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
    for pid in "${SERVE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
now() { date +%s.%N; }
rate() { python3 -c "import sys; b=float(sys.argv[1]); t=float(sys.argv[2]); print(f'{b/t/1e9:.3f}')" "$1" "$2"; }

echo "generating $TOTAL_MIB MiB of incompressible recordings in $FILES files"
mkdir -p "$WORK/source"
PER_FILE=$(( TOTAL_MIB / FILES ))
for i in $(seq 1 "$FILES"); do
    head -c "$(( PER_FILE * 1024 * 1024 ))" /dev/urandom > "$WORK/source/recording-$i.bin"
done
BYTES=$(( PER_FILE * FILES * 1024 * 1024 ))
sync

# --- rsync over ssh to a private sshd -------------------------------------------------------
SSH_PORT="$(free_port)"
mkdir -p "$WORK/ssh"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/client_key"
cp "$WORK/ssh/client_key.pub" "$WORK/ssh/authorized_keys"
chmod 600 "$WORK/ssh/authorized_keys"
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -p "$SSH_PORT" -o ListenAddress=127.0.0.1 -h "$WORK/ssh/host_key" \
    -o AuthorizedKeysFile="$WORK/ssh/authorized_keys" -o StrictModes=no -o PasswordAuthentication=no \
    -o PidFile="$WORK/ssh/sshd.pid" 2>"$WORK/ssh/sshd.log" &
SSHD_PID=$!
SSH="ssh -p $SSH_PORT -i $WORK/ssh/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -c aes128-gcm@openssh.com"
for _ in $(seq 1 50); do $SSH 127.0.0.1 true 2>/dev/null && break; sleep 0.1; done

mkdir -p "$WORK/rsync-ssh"
start=$(now)
rsync -a -e "$SSH" "$WORK/source/" "127.0.0.1:$WORK/rsync-ssh/"
sync
RSYNC_SSH_S=$(python3 -c "print($(now) - $start)")

# --- rsync between local folders -------------------------------------------------------------
mkdir -p "$WORK/rsync-local"
start=$(now)
rsync -a "$WORK/source/" "$WORK/rsync-local/"
sync
RSYNC_LOCAL_S=$(python3 -c "print($(now) - $start)")

# --- dyad --------------------------------------------------------------------------------------
"$DYAD" keygen > "$WORK/pair.key"
PORT_A="$(free_port)"; PORT_B="$(free_port)"
"$DYAD" init --data-dir "$WORK/a" --name rsync-a --listen "127.0.0.1:$PORT_A" --psk-file "$WORK/pair.key" >/dev/null
"$DYAD" init --data-dir "$WORK/b" --name rsync-b --listen "127.0.0.1:$PORT_B" --psk-file "$WORK/pair.key" >/dev/null
for file in "$WORK"/source/*.bin; do
    "$DYAD" session import --data-dir "$WORK/a" --file "$file" >/dev/null
done
"$DYAD" serve --data-dir "$WORK/a" 2>"$WORK/a.log" & SERVE_PIDS+=($!)
"$DYAD" serve --data-dir "$WORK/b" 2>"$WORK/b.log" & SERVE_PIDS+=($!)
for dir in a b; do
    for _ in $(seq 1 100); do [ -S "$WORK/$dir/admin.sock" ] && break; sleep 0.1; done
done
"$DYAD" establish --data-dir "$WORK/a" --backup "127.0.0.1:$PORT_B" --reverse "127.0.0.1:$PORT_A" >/dev/null
start=$(now)
"$DYAD" sync-now --data-dir "$WORK/b" >/dev/null
DYAD_S=$(python3 -c "print($(now) - $start)")
diff <("$DYAD" session list --data-dir "$WORK/a") <("$DYAD" session list --data-dir "$WORK/b") >/dev/null \
    || { echo "the two appliances differ after the sync"; exit 1; }

echo
echo "$(( BYTES / 1024 / 1024 )) MiB in $FILES files:"
echo "  rsync -a over ssh (aes128-gcm): $(rate $BYTES $RSYNC_SSH_S) GB/s"
echo "  rsync -a local folders:         $(rate $BYTES $RSYNC_LOCAL_S) GB/s"
echo "  dyad sync-now (verified, fsync): $(rate $BYTES $DYAD_S) GB/s"
python3 -c "
ssh=float('$RSYNC_SSH_S'); local=float('$RSYNC_LOCAL_S'); dyad=float('$DYAD_S')
print(f'  dyad / rsync over ssh = {ssh/dyad:.2f}x (target 2x); dyad / local rsync = {local/dyad:.2f}x (target 1.2x)')"
