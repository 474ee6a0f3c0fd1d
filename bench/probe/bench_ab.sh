#!/usr/bin/env bash
# kda-bench over several sets of kernel templates in one GPU session, the
# sets in turn for ROUNDS rounds (round 2 in reverse order), so that drift
# of the lent machine falls on every set alike. Each run tunes from scratch
# into its own database. Outputs $OUT/<name>-<round>.log and
# $OUT/<name>-<round>/<gpu>-<date>.json.
#   bash bench/probe/bench_ab.sh BUILD_DIR "name=DIR;name2=DIR2" ROUNDS [kda-bench args...]
# DIR is a folder holding every kernel template (KDA_KERNEL_DIR), or empty
# for the set embedded in the build, e.g.
#   mkdir -p bench/probe/head_kt && for f in kernel_templates/*; do
#     git show HEAD:$f > bench/probe/head_kt/${f##*/}; done
# (bench/probe/*_kt/ is git-ignored: carry it to the GPU machine).
set -u
OUT=${OUT:-$PWD/ab-out}
mkdir -p "$OUT"
build=$1 sets=$2 rounds=$3
shift 3
IFS=';' read -ra list <<< "$sets"
for round in $(seq 1 "$rounds"); do
  order=("${list[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=()
    for ((i = ${#list[@]} - 1; i >= 0; --i)); do order+=("${list[$i]}"); done
  fi
  for s in "${order[@]}"; do
    name=${s%%=*} dir=${s#*=}
    [ "$dir" = "$s" ] && dir=""
    log=$OUT/$name-$round.log
    t0=$(date +%s)
    KDA_KERNEL_DIR=$dir "$build/tools/kda-bench" --json-dir "$OUT/$name-$round" \
      --db "$(mktemp -u /tmp/kda-ab-XXXXXX).db" "$@" > "$log" 2>&1
    echo "== $name round $round: exit $?, $(( $(date +%s) - t0 )) s"
    grep -E "^(matrix|varlen|no-bias|K=64|chunk|more)" "$log" | cut -c1-150
  done
done
