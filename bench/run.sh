#!/usr/bin/env bash
# The benchmark harness: `bash bench/run.sh` from anywhere in the repo.
#
# Installs wrk and nginx-light if missing (apt-get, as root or with sudo),
# builds the proxy (`cargo build --release`, exactly what users run), the
# standalone emulator and the measuring client (bench/, its own workspace),
# then runs every row and writes bench/results.md (also printed).
#
# Options:
#   --quick              short rows (for checking the harness, not for numbers)
#   --wait-quiet[=MIN]   first wait until the 1-minute load average stays below
#                        0.5 for a minute (at most MIN minutes, default 40)
#   --sections LIST      only some of: throughput,latency,stream,memory,cold,sizes,
#                        tenancy,serverless
#   --out FILE           where to write the report (default bench/results.md)
#   --arm64              also build gigachat-api for aarch64-unknown-linux-gnu (the
#                        Lambda bootstrap; needs the rustup target, installs
#                        Debian's gcc-aarch64-linux-gnu) and report its zip size
#   --proxy-env K=V      extra environment for the proxy (experiments, e.g.
#                        TOKIO_WORKER_THREADS=1); said in the report
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
cd "$ROOT"

QUICK=()
EXTRA=()
ARM64=0
SECTIONS=()
OUT="$BENCH/results.md"
WAIT_MIN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=(--quick) ;;
    --arm64) ARM64=1 ;;
    --wait-quiet) WAIT_MIN=40 ;;
    --wait-quiet=*) WAIT_MIN="${1#*=}" ;;
    --sections) SECTIONS=(--sections "$2"); shift ;;
    --out) OUT="$2"; shift ;;
    --proxy-env) EXTRA+=(--proxy-env "$2"); shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

# --- tools --------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx-light)
command -v zip >/dev/null || need+=(zip)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "bench: installing ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

# --- builds ---------------------------------------------------------------
# The proxy exactly as `cargo run --release` builds it (the root package's
# bins: the local server and the Vercel/Lambda functions, for their sizes).
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
echo "bench: building the proxy (release; the first build takes minutes)" >&2
cargo build --release --bins --quiet
cargo build --release -p gigachat-emulator --bin gigachat-emulator --quiet
# The hyper floor row (issue 15): hyper alone, doing nginx's forwarding.
cargo build --release -p gigachat-proxy-server --example bare_hyper_proxy --quiet
CARGO_TARGET_DIR="$BENCH/target" cargo build --release --quiet --manifest-path "$BENCH/Cargo.toml"
if [ "$ARM64" = 1 ]; then
  # The Lambda bootstrap's architecture, same release profile. cargo-lambda
  # would link with zig; Debian's cross gcc does the same job for a size.
  rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$' \
    || rustup target add aarch64-unknown-linux-gnu
  if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc-aarch64-linux-gnu >/dev/null
  fi
  echo "bench: building gigachat-api for aarch64 (minutes)" >&2
  CARGO_TARGET_DIR="$BENCH/target/arm" \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar \
    cargo build --release --quiet --target aarch64-unknown-linux-gnu --bin gigachat-api
  EXTRA+=(--arm64-bin "$BENCH/target/arm/aarch64-unknown-linux-gnu/release/gigachat-api")
fi

# --- a quiet machine ------------------------------------------------------
NOTES=()
if [ "$WAIT_MIN" -gt 0 ]; then
  echo "bench: waiting up to $WAIT_MIN min for the 1-min load average to stay < 0.5 for 60 s" >&2
  deadline=$(( $(date +%s) + WAIT_MIN * 60 ))
  quiet_since=""
  while :; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    now=$(date +%s)
    if awk -v l="$load" 'BEGIN { exit !(l < 0.5) }'; then
      quiet_since="${quiet_since:-$now}"
      if [ $(( now - quiet_since )) -ge 60 ]; then break; fi
    else
      quiet_since=""
    fi
    if [ "$now" -ge "$deadline" ]; then
      NOTES+=(--note "**The machine never got quiet** (1-min load average $load after waiting $WAIT_MIN min): other work ran during these measurements.")
      echo "bench: still busy (load $load); measuring anyway" >&2
      break
    fi
    sleep 5
  done
fi

# Enough descriptors for 1,000 streams (client, proxy both ways, emulator).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK="$(mktemp -d /tmp/gigachat-bench.XXXXXX)"
chmod 755 "$WORK"
trap 'rm -rf "$WORK"' EXIT

"$BENCH/target/release/gigachat-bench" \
  --proxy-bin "$TARGET/release/gigachat-proxy" \
  --emulator-bin "$TARGET/release/gigachat-emulator" \
  --bin-dir "$TARGET/release" \
  --bench-dir "$BENCH" \
  --work-dir "$WORK" \
  --wrk "$(command -v wrk)" \
  --nginx "$NGINX" \
  --out "$OUT" \
  "${QUICK[@]}" "${SECTIONS[@]}" "${NOTES[@]}" "${EXTRA[@]}"
