#!/usr/bin/env bash
# Does the host cost of a warm call depend on which CPU the calling thread
# runs on? kda-bench --host-only pinned to each CPU in turn (two rounds),
# with unpinned runs between, on one tuning database; plus the machine's
# topology (which NUMA node the GPU hangs off). Usage, on a GPU machine
# with kda-bench built in BUILD (default build-gpu):
#   OUT=dir bash bench/probe/host_cpu.sh [BUILD] [each|alternate N]
# each: every CPU in turn, two rounds. alternate N: N rounds of unpinned,
# pinned to one CPU and pinned to two, in turn (drift reaches all three).
set -u
build=${1:-build-gpu}
mode=${2:-each}
rounds=${3:-10}
OUT=${OUT:-$PWD/host-cpu-out}
mkdir -p "$OUT"
bench=$build/tools/kda-bench
db=$(mktemp -d)/tune.db
{
  nvidia-smi --query-gpu=name,driver_version,pci.bus_id --format=csv
  nvidia-smi topo -m
  lscpu
  command -v numactl >/dev/null && numactl -H
  bus=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader | head -1 | tr 'A-F' 'a-f' | sed 's/^0000//')
  for d in /sys/bus/pci/devices/*"${bus#0000}"; do
    echo "$d numa_node=$(cat "$d/numa_node" 2>/dev/null) local_cpulist=$(cat "$d/local_cpulist" 2>/dev/null)"
  done
  grep -H . /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor 2>/dev/null | head -20
  grep MHz /proc/cpuinfo
} > "$OUT/topology.txt" 2>&1
ncpu=$(nproc)
one() {  # label, then the command prefix
  local label=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@" "$bench" --host-only --db "$db" > "$OUT/run-$label.log" 2>&1
  # The target's figure: the tuned-slot path's 100k enqueues, and the median inside.
  local line; line=$(grep "tuned-slot path):" "$OUT/run-$label.log")
  printf "%-14s %s\n" "$label" "$(echo "$line" | sed 's/.*): //')" | tee -a "$OUT/summary.txt"
}
one warmup
if [ "$mode" = alternate ]; then
  for ((r = 1; r <= rounds; ++r)); do
    one "a$r-free"
    one "a$r-cpu4" taskset -c 4
    one "a$r-cpu4,5" taskset -c 4,5
  done
  exit 0
fi
for round in 1 2; do
  one "r$round-free-a"
  for ((c = 0; c < ncpu; ++c)); do one "r$round-cpu$c" taskset -c "$c"; done
  one "r$round-free-b"
done
