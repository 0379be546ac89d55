#!/bin/sh
# bench_smoke.sh BENCH_STEP BENCH_STATS - the step benchmark behind the README's performance tables runs in
# every mode (sharded, data-parallel with messages and with the step buffers) and element type
# (float32, bfloat16, float16), on 2 ranks and a small sweep, and prints a finite ratio to its
# floor: the tables' commands keep working as the library changes; benchmarks/step_table.py makes
# a table of all 18 lines, with the CPU, and refuses a CSV cut short and a file that is not such a
# CSV; bench_stats runs on a small array, reports every width's figure finite and the library's
# row-sum loop with the same bits at every width, and refuses a bad option. Timings are not checked.
set -eu
bench=$1 stats=$2
table=$(dirname "$0")/../benchmarks/step_table.py
fail() { echo "FAIL: $*"; exit 1; }
csv=$(mktemp)
trap 'rm -f "$csv" "$csv.all" "$csv.cut"' EXIT
echo "# cpu: smoke-test CPU" > "$csv"
for opt in adamp sgdp; do
  for mode in sharded dp dp-shm; do
    for dt in fp32 bf16 fp16; do
      out=$(mpirun -np 2 --oversubscribe "$bench" --set sweep --millions 1 --row-len 300 --steps 3 --opt "$opt" \
        --grads orthogonal --mode "$mode" --dtype "$dt") || fail "bench_step --opt $opt --mode $mode --dtype $dt exited non-zero"
      line=$(printf '%s\n' "$out" | grep " $mode " | grep " $dt ") || fail "no result line for $opt $mode $dt"
      printf '%s\n' "$line" | cut -c1-120
      printf '%s\n' "$line" | grep -Eq ' [0-9]+\.[0-9]+ x floor' || fail "no floor ratio for $opt $mode $dt"
      printf '%s\n' "$line" | grep -Eqi '(^|[^a-z])(nan|inf)([^a-z]|$)' && fail "non-finite figure for $opt $mode $dt"
      printf '%s\n' "$out" | grep -q '^csv,.*,'"$dt"'$' || fail "no CSV line for $opt $mode $dt"
      printf '%s\n' "$out" | grep '^csv,' >> "$csv.all"
    done
  done
done
# The README's table from these lines (one header, as run_step.sh keeps): one row per line, the CPU
# named, every ratio finite.
awk '!/^csv,set/ || !seen++' "$csv.all" >> "$csv"
rows=$(/usr/bin/python3 "$table" "$csv" "$csv") || fail "step_table.py failed on bench_step's CSV"
printf '%s\n' "$rows" | grep -q '^CPU: smoke-test CPU;' || fail "step_table.py does not name the CPU"
n=$(printf '%s\n' "$rows" | grep -c '^| sweep |') || true
[ "$n" -eq 18 ] || fail "step_table.py printed $n rows for 18 CSV lines"
printf '%s\n' "$rows" | grep -Eqi '(^|[^a-z])(nan|inf)([^a-z]|$)' && fail "non-finite figure in step_table.py's table"
# A run cut off in the middle of a line: refused, naming the line.
head -n 3 "$csv" > "$csv.cut" && sed -n 4p "$csv" | cut -c1-60 >> "$csv.cut"
msg=$(/usr/bin/python3 "$table" "$csv.cut" 2>&1) && fail "step_table.py accepted a CSV cut short"
rm -f "$csv.cut"
printf '%s\n' "$msg" | grep -q "result line 2 is cut short" || fail "step_table.py's refusal of a cut CSV: $msg"
printf 'not,a,table\n1,2,3\n' > "$csv"
msg=$(/usr/bin/python3 "$table" "$csv" 2>&1) && fail "step_table.py accepted a file that is not run_step.sh's CSV"
printf '%s\n' "$msg" | grep -q "is not a CSV of benchmarks/run_step.sh" || fail "step_table.py's refusal does not say why: $msg"
echo "step_table.py: 18 rows; a cut and a wrong file refused"
out=$("$stats" --millions 1 --row-len 147,300 --rounds 3) || fail "bench_stats exited non-zero: $out"
printf '%s\n' "$out" | grep -q '^the library.s loop gives the same bits at every width: yes$' || fail "bench_stats: $out"
n=$(printf '%s\n' "$out" | grep -c '^csv,') || true
[ "$n" -ge 8 ] || fail "bench_stats printed $n CSV lines"
printf '%s\n' "$out" | grep -Eqi '(^|[^a-z])(nan|inf)([^a-z]|$)' && fail "non-finite figure in bench_stats: $out"
msg=$("$stats" --row-len 0 2>&1) && fail "bench_stats accepted --row-len 0"
printf '%s\n' "$msg" | grep -q "row-len must be a positive integer" || fail "bench_stats's refusal: $msg"
echo "bench_stats: $n figures, the same bits at every width, --row-len 0 refused"
echo "bench_step: every mode and element type ran"
