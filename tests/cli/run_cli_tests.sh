#!/bin/sh
# kda-tune CLI tests (no GPU needed). Usage:
#   run_cli_tests.sh KDA_TUNE MAKE_TEST_DB CLI_DIR
# Each case's output (stdout + stderr + "exit=N") is normalised (temporary
# paths, times, sizes, hashes, keys and NVRTC versions that vary between
# builds) and compared with CLI_DIR/golden/NAME.out.
# UPDATE_GOLDEN=1 rewrites the golden files instead.
set -u
TUNE=$1
MAKEDB=$2
DIR=$3
GOLD=$DIR/golden
T=$(mktemp -d /tmp/kda_cli_test.XXXXXX)
trap 'rm -rf "$T"' EXIT
# Never touch the user's cache.
export HOME=$T/home KDA_CACHE_DIR=$T/cache
unset XDG_CACHE_HOME KDA_TUNE KDA_LOG
mkdir -p "$HOME"
fails=0
cases=0

norm() {
  sed -E -e "s#$T#<TMP>#g" \
    -e 's/[0-9]+(\.[0-9]+)? ms/N ms/g' \
    -e 's/time +[0-9.]+ s/time N s/' \
    -e 's/^size .*/size        N bytes/' \
    -e 's/[0-9]+ bytes, ([0-9]+) stale/N bytes, \1 stale/' \
    -e 's/[0-9a-f]{64}/<HASH>/g' \
    -e 's/[0-9a-f]{16}/<KEY>/g' \
    -e 's/NVRTC [0-9]+\.[0-9]+ [^ ,"]*/NVRTC <NVRTC>/g' \
    -e 's/"nvrtc_version": "[^"]*"/"nvrtc_version": "<NVRTC>"/g' \
    -e 's/,[0-9]+\.[0-9]+ (libnvrtc|build-id=)[^,]*,/,<NVRTC>,/g' \
    -e 's/\.corrupt-[0-9]+/.corrupt-<TIME>/g' \
    -e 's/[0-9]+ bytes\)/N bytes)/g' \
    -e 's/"(ms|seconds)": [0-9.]+/"\1": N/g'
}

# check NAME COMMAND...: runs the command, compares with golden NAME.out.
check() {
  name=$1
  shift
  cases=$((cases + 1))
  out=$T/$name.out
  "$@" >"$T/raw" 2>&1
  echo "exit=$?" >>"$T/raw"
  norm <"$T/raw" >"$out"
  if [ "${UPDATE_GOLDEN:-0}" = 1 ]; then
    cp "$out" "$GOLD/$name.out"
  elif ! diff -u "$GOLD/$name.out" "$out"; then
    echo "FAIL: $name"
    fails=$((fails + 1))
  fi
}

# expect NAME CONDITION-DESCRIPTION: records a non-golden assertion.
expect() {
  cases=$((cases + 1))
  if [ "$2" != 0 ]; then
    echo "FAIL: $1"
    fails=$((fails + 1))
  fi
}

DB=$T/tune.db

# --- prewarm --compile-only builds a database with no GPU --------------------
check prewarm_compile_only "$TUNE" prewarm --db "$DB" --compile-only --arch sm_90 --heads 32 \
  --tokens 512,70000 --varlen both
check prewarm_compile_again "$TUNE" prewarm --db "$DB" --compile-only --arch sm_90 --heads 32 \
  --tokens 512,70000 --varlen both
check prewarm_compile_json "$TUNE" prewarm --db "$DB" --compile-only --arch sm_90 --heads 16 \
  --tokens 512 --json
check prewarm_model_dry_run "$TUNE" prewarm --model kimi-linear --tp 1,2,4,8 --dry-run
check prewarm_host_rows_dry_run "$TUNE" prewarm --heads 16 --varlen both --host-rows both \
  --chunk 64,256 --dry-run
check prewarm_chunk_plan_dry_run "$TUNE" prewarm --heads 16 --varlen both --chunk-plan both \
  --host-rows both --tokens 512,8192 --dry-run
check prewarm_needs_arch "$TUNE" prewarm --db "$DB" --compile-only --heads 32
check prewarm_no_shapes "$TUNE" prewarm --db "$DB" --compile-only --arch sm_90
check prewarm_bad_tp "$TUNE" prewarm --model kimi-linear --tp 3 --dry-run
check verify_hash_only "$TUNE" verify --db "$DB" --hash-only

# --- result rows (compile-only stores none) -----------------------------------
"$MAKEDB" "$DB"
expect make_test_db $?
check list "$TUNE" list --db "$DB"
check list_gpu_name "$TUNE" list --db "$DB" --gpu H200
check list_stale "$TUNE" list --db "$DB" --stale
check list_heads "$TUNE" list --db "$DB" --heads 8 --json
check list_bad_value "$TUNE" list --db "$DB" --heads many
# --kernel takes the entry points prewarm and the API name, or a template.
check list_entry_point "$TUNE" list --db "$DB" --kernel gate_chunk_cumsum --gpu H200
check list_other_entry_point "$TUNE" list --db "$DB" --kernel chunk_local_cumsum
check list_unknown_kernel "$TUNE" list --db "$DB" --kernel gate_cumsum_typo
KEY=$("$TUNE" list --db "$DB" --bucket 1 --gpu H100 --json | sed -n 's/.*"key": "\([0-9a-f]*\)".*/\1/p' | head -n 1)
check show_key "$TUNE" show --db "$DB" "$(echo "$KEY" | cut -c1-8)"
check show_id_json "$TUNE" show --db "$DB" 2 --json
check show_missing "$TUNE" show --db "$DB" 9999
check show_no_arg "$TUNE" show --db "$DB"
check stats "$TUNE" stats --db "$DB"

# --- export / import round trip ------------------------------------------------
check export_json "$TUNE" export --db "$DB" --gpu sm90-pci2330
check export_csv "$TUNE" export --db "$DB" --format csv
"$TUNE" export --db "$DB" --output "$T/e1.json"
expect export_to_file $?
check import_empty "$TUNE" import --db "$T/copy.db" "$T/e1.json"
"$TUNE" export --db "$T/copy.db" --output "$T/e2.json"
# Identical but for each row's source, which now names the import.
grep -v '"source":' "$T/e1.json" >"$T/e1.nosrc"
grep -v '"source":' "$T/e2.json" >"$T/e2.nosrc"
cmp -s "$T/e1.nosrc" "$T/e2.nosrc" && [ "$(grep -c '"source": "import of e1.json: ' "$T/e2.json")" = 4 ]
expect round_trip_identical $?
check import_again_keeps "$TUNE" import --db "$T/copy.db" "$T/e1.json"
"$TUNE" export --db "$T/copy.db" --output "$T/e3.json"
cmp -s "$T/e2.json" "$T/e3.json"
expect import_idempotent $?
check show_imported_source "$TUNE" show --db "$T/copy.db" 1
printf '{"format": "kda-tune-export", "version": 1, "results": [\n  {"gpu_key": 3}\n]}\n' >"$T/bad.json"
check import_bad_rows "$TUNE" import --db "$T/copy.db" "$T/bad.json"
printf '{"format": "kda-tune-export",\n "results": [}\n' >"$T/broken.json"
check import_broken_json "$TUNE" import --db "$T/copy.db" "$T/broken.json"
check import_missing_file "$TUNE" import --db "$T/copy.db" "$T/nope.json"

# --- purge ------------------------------------------------------------------------
check purge_needs_filter "$TUNE" purge --db "$DB"
check purge_stale_dry_run "$TUNE" purge --db "$DB" --stale --dry-run --results-only
check purge_stale "$TUNE" purge --db "$DB" --stale --results-only
check purge_gpu_dry_run "$TUNE" purge --db "$DB" --gpu H200 --dry-run
check purge_older_than "$TUNE" purge --db "$DB" --older-than 1d --results-only
check list_after_purge "$TUNE" list --db "$DB"

# --- a database that is not there, or not a file ----------------------------------
# Reads of a missing file are errors that name the path and its rule, not an
# empty answer; purge does not create the file.
check list_missing_db "$TUNE" list --db "$T/typo.db"
check verify_missing_db "$TUNE" verify --db "$T/typo.db" --hash-only
check purge_missing_db "$TUNE" purge --db "$T/typo.db" --all
[ ! -e "$T/typo.db" ]
expect purge_missing_db_not_created $?
check stats_missing_default "$TUNE" stats
mkdir -p "$T/folder.db"
check list_folder_db "$TUNE" list --db "$T/folder.db"

# --- shapes files -----------------------------------------------------------------
printf '# deployment shapes\nheads=32 tokens=512\n\nheads=16 gate=softplus dtype=bf16,f32 tokens=512,9000\n' >"$T/good.shapes"
check shapes_good "$TUNE" prewarm --shapes "$T/good.shapes" --dry-run
printf '# ok line\nheads=32\nheads=32 colour=blue\n' >"$T/bad_key.shapes"
check shapes_bad_key "$TUNE" prewarm --shapes "$T/bad_key.shapes" --dry-run
printf 'heads=32\n\n  chunk=48 heads=8\n' >"$T/bad_value.shapes"
check shapes_bad_value "$TUNE" prewarm --shapes "$T/bad_value.shapes" --dry-run
printf 'heads=32 bias\n' >"$T/no_equals.shapes"
check shapes_no_equals "$TUNE" prewarm --shapes "$T/no_equals.shapes" --dry-run
printf 'head-dim=64\n' >"$T/no_heads.shapes"
check shapes_no_heads "$TUNE" prewarm --shapes "$T/no_heads.shapes" --dry-run
printf '# nothing\n\n' >"$T/empty.shapes"
check shapes_empty "$TUNE" prewarm --shapes "$T/empty.shapes" --dry-run
check shapes_missing "$TUNE" prewarm --shapes "$T/missing.shapes" --dry-run

# --- flags --------------------------------------------------------------------------
check unknown_flag "$TUNE" stats --db "$DB" --colour
check unknown_command "$TUNE" frobnicate
check missing_value "$TUNE" list --db
for c in prewarm list show lookup stats export import purge verify info bench; do
  "$TUNE" "$c" --help >/dev/null 2>&1
  expect "help_$c" $?
done

# A row whose key is longer than a record holds (hand-edited): show prints
# it, its provenance unknown (it cannot be found again by the cut key).
"$MAKEDB" "$T/long.db" long
"$TUNE" show --db "$T/long.db" 5 >"$T/long.out" 2>&1
rc=$?
[ $rc = 0 ] && grep -q 'tuned on    unknown' "$T/long.out"
expect show_row_longer_than_a_record $?

# --- lookup: what a deployment's calls take from the database ------------------------
# lk.db also holds the row kda_db_lookup names for a dense H=16 call of 3000
# tokens on the H100 (make_test_db ... lookup).
"$MAKEDB" "$T/lk.db" lookup
expect make_test_db_lookup $?
check lookup_served_and_other_bucket "$TUNE" lookup --db "$T/lk.db" --gpu H100 --heads 16 --tokens 3000,70000
check lookup_view_at_an_offset "$TUNE" lookup --db "$T/lk.db" --gpu H100 --heads 16 --tokens 3000 --g-align 8
check lookup_check_fails_on_a_miss "$TUNE" lookup --db "$T/lk.db" --gpu sm90-pci2330-sms132-l2_52428800 --heads 16 --tokens 3000 --check
check lookup_json "$TUNE" lookup --db "$T/lk.db" --gpu H100 --heads 16 --tokens 3000,70000 --json
check lookup_gpu_not_held "$TUNE" lookup --db "$T/lk.db" --gpu sm80-pci20b0-sms108-l2_41943040 --heads 16 --tokens 3000
check lookup_gpu_not_a_key "$TUNE" lookup --db "$T/lk.db" --gpu A100 --heads 16 --tokens 3000
check lookup_gpu_ambiguous "$TUNE" lookup --db "$T/lk.db" --gpu sm90 --heads 16 --tokens 3000
check lookup_missing_db "$TUNE" lookup --db "$T/nothing-here.db" --gpu H100 --heads 16
check lookup_bad_align "$TUNE" lookup --db "$T/lk.db" --gpu H100 --heads 16 --g-align 12
# Views: prewarm takes the same alignments (flags or a shapes file's keys),
# and what --compile-only stores for a view is what lookup finds for it;
# the aligned call's cubin (another vector width) is not stored.
check prewarm_views_dry_run "$TUNE" prewarm --heads 16 --tokens 3000 --dtype bf16,f32 --g-align 8 --dry-run
printf 'heads=16 tokens=3000 g-align=4 out-align=16\nheads=16 tokens=3000\n' >"$T/views.shapes"
check shapes_views "$TUNE" prewarm --shapes "$T/views.shapes" --dry-run
printf 'heads=16 g-align=3\n' >"$T/bad_align.shapes"
check shapes_bad_align "$TUNE" prewarm --shapes "$T/bad_align.shapes" --dry-run
"$TUNE" prewarm --compile-only --arch sm_90 --db "$T/views.db" --heads 16 --tokens 3000 --g-align 8 >/dev/null 2>&1
expect prewarm_compile_only_view $?
check lookup_compiled_view "$TUNE" lookup --db "$T/views.db" --gpu sm90-pci2330-sms132-l2_52428800 --heads 16 --tokens 3000 --g-align 8
check lookup_compiled_view_aligned_call "$TUNE" lookup --db "$T/views.db" --gpu sm90-pci2330-sms132-l2_52428800 --heads 16 --tokens 3000
# Both g and out views: their stand-in addresses must not be read as
# overlapping tensors (compile-only refused it as an in-place call).
"$TUNE" prewarm --compile-only --arch sm_90 --db "$T/views.db" --heads 16 --tokens 3000 --g-align 16 --out-align 8 >/dev/null 2>&1
expect prewarm_compile_only_g_and_out_views $?
check lookup_compiled_g_and_out_views "$TUNE" lookup --db "$T/views.db" --gpu sm90-pci2330-sms132-l2_52428800 --heads 16 --tokens 3000 --g-align 16 --out-align 8
if "$TUNE" info 2>&1 | grep -q '^gpu         none'; then
  check lookup_no_gpu_two_models "$TUNE" lookup --db "$T/lk.db" --heads 16 --tokens 3000
fi

# --- a corrupt database ---------------------------------------------------------------
head -c 8192 /dev/urandom >"$T/corrupt.db"
check corrupt_list "$TUNE" list --db "$T/corrupt.db"
check corrupt_stats "$TUNE" stats --db "$T/corrupt.db"
check corrupt_import_moves_aside "$TUNE" import --db "$T/corrupt.db" "$T/e1.json"
ls "$T" | grep -q 'corrupt.db.corrupt-'
expect corrupt_file_kept_aside $?
check corrupt_after_repair "$TUNE" list --db "$T/corrupt.db" --gpu H200

# --- without a GPU (skipped where one is present) -------------------------------------
if "$TUNE" info 2>&1 | grep -q '^gpu         none'; then
  "$TUNE" verify --db "$DB" >"$T/verify.out" 2>&1
  rc=$?
  [ $rc = 1 ] && grep -q 'no usable GPU' "$T/verify.out"
  expect verify_without_gpu_fails_clearly $?
  "$TUNE" prewarm --db "$DB" --heads 32 --tokens 512 >"$T/prewarm.out" 2>&1
  rc=$?
  [ $rc = 1 ] && grep -q 'no usable GPU' "$T/prewarm.out" && grep -q -- '--compile-only' "$T/prewarm.out"
  expect prewarm_without_gpu_fails_clearly $?
fi

echo "$cases cases, $fails failed"
[ "$fails" = 0 ]
