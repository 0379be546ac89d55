#!/usr/bin/python3
"""step_table.py - the README's step table from the CSV of benchmarks/run_step.sh.

    /usr/bin/python3 benchmarks/step_table.py RUN.csv [MORE.csv ...]
    /usr/bin/python3 benchmarks/step_table.py MIXED.csv   (the CSV of benchmarks/run_mixed.sh)

The table is RUN.csv, one run, line by line in the script's order. Each further CSV is another
run of the same script: its lines add the range of the ratio to the floor over all the runs given
(the column "x floor, all runs"), matched by shapes, optimizer, gradients, mode, ranks, threads and
type. The CPU is the one named by the "# cpu:" line run_step.sh writes first into its CSV.

Per line: the step's median time; the step over the fused loop of the same run; the step over its
floor (for the data-parallel modes, the data-parallel floor); the read-only kernel's time over the
statistics pass's ("statistics x read-only", the issue's at least 0.9); and the bytes per second
the design moves over what the bandwidth kernel moves in the same run ("x kernel bandwidth", the
threads target's 0.9 with two threads; float32 sharded lines only, the others move other bytes). A ratio that meets its target is in bold: a step within
1.10x its floor (sharded, 1 or 2 threads, 1 or 2 ranks), a data-parallel step through the step
buffers within 1.15x on 2 ranks, a statistics pass at 0.9 or more, two threads at 0.9 of the
kernel's bandwidth. Lines without a target (4 ranks on 2 cores, the caller's buffers) are plain.

Given the CSV of run_mixed.sh instead, it prints the README's mixed-precision table: per line the
16-bit step over the float32 step, clipped over unclipped for both, and the bytes per parameter
per rank (each ratio is bench_mixed's median of the rounds' own ratios).
"""
import csv
import sys

SHAPES = {"resnet50": "ResNet-50", "gpt2": "GPT-2 small"}
OPTS = {"adamp": "AdamP", "adamw": "AdamW (delta 0)", "sgdp": "SGDP", "sgd": "SGD (delta 0)"}
MODES = {"sharded": "sharded", "dp": "data-parallel, caller's buffers",
         "dp-shm": "data-parallel, step buffers"}
KEY = ("set", "opt", "grads", "mode", "ranks", "threads", "dtype")
STEP_COLUMNS = KEY + ("step_ms", "step_over_fused", "step_over_floor", "step_over_dp_floor",
                      "readonly_over_stats", "effective_over_kernel", "projected_tensors")
MIXED_COLUMNS = ("set", "opt", "mode", "dtype", "ranks", "half_over_fp32", "clip_over_plain_fp32",
                 "clip_over_plain_half", "bytes_per_param_fp32", "bytes_per_param_half")


def read(path):
    """The CSV's rows as dicts, and the CPU named by its '# cpu:' line (None without one)."""
    cpu = None
    lines = []
    try:
        f = open(path, newline="")
    except OSError as e:
        raise SystemExit(f"step_table.py: cannot read {path}: {e.strerror}")
    with f:
        for line in f:
            if line.startswith("# cpu:"):
                cpu = line[len("# cpu:"):].strip()
            elif line.strip() and not line.startswith("#"):
                lines.append(line)
    rows = list(csv.DictReader(lines))
    if not rows or not ("step_over_floor" in rows[0] or "half_over_fp32" in rows[0]):
        raise SystemExit(f"step_table.py: {path} is not a CSV of benchmarks/run_step.sh or run_mixed.sh")
    need = MIXED_COLUMNS if "half_over_fp32" in rows[0] else STEP_COLUMNS
    missing = [c for c in need if c not in rows[0]]
    if missing:
        raise SystemExit(f"step_table.py: {path} has no column {', '.join(missing)} "
                         "(written by an older benchmark? run the script again)")
    for n, r in enumerate(rows, 1):
        if any(r.get(c) in (None, "") for c in need):
            raise SystemExit(f"step_table.py: {path}: result line {n} is cut short")
    return rows, cpu


def mixed_table(path, rows, cpu):
    """The mixed-precision table of one run of run_mixed.sh."""
    print(f"CPU: {cpu or 'not recorded in the CSV'}; the table is {path}")
    print()
    head = ["shapes", "ranks", "buffers", "type", "16-bit step x float32 step",
            "clipped x unclipped (fp32 / 16-bit)", "bytes per parameter per rank, fp32 / 16-bit"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    buffers = {"dp-shm": "`adampi_alloc_step_buffers`", "dp": "caller's (messages)"}
    for r in rows:
        shapes = SHAPES.get(r["set"], r["set"])
        if r["opt"] != "adamp":
            shapes += ", " + OPTS.get(r["opt"], r["opt"])
        cells = [shapes, r["ranks"], buffers.get(r["mode"], r["mode"]), r["dtype"],
                 f"{float(r['half_over_fp32']):.2f}",
                 f"{float(r['clip_over_plain_fp32']):.2f} / {float(r['clip_over_plain_half']):.2f}",
                 f"{float(r['bytes_per_param_fp32']):.1f} / {float(r['bytes_per_param_half']):.1f}"]
        print("| " + " | ".join(cells) + " |")
    return 0


def floor_ratio(r):
    """The step over its floor: the data-parallel floor for the data-parallel modes (a 16-bit
    model's one floor holds its data-parallel parts)."""
    if r["mode"] == "sharded" or r["dtype"] != "fp32":
        return float(r["step_over_floor"])
    return float(r["step_over_dp_floor"])


def floor_target(r):
    """The issue's target for this line's floor ratio, or None where it sets none."""
    if r["mode"] == "sharded" and int(r["ranks"]) <= 2:
        return 1.10
    if r["mode"] == "dp-shm" and int(r["ranks"]) == 2:
        return 1.15
    return None


def bold_if(text, met):
    return f"**{text}**" if met else text


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n")[1].strip())
        return 0 if len(argv) >= 2 else 2
    runs = [read(p) for p in argv[1:]]
    rows, cpu = runs[0]
    if "half_over_fp32" in rows[0]:
        if len(runs) > 1:
            raise SystemExit("step_table.py: one CSV of run_mixed.sh at a time")
        return mixed_table(argv[1], rows, cpu)
    if any("step_over_floor" not in r[0][0] for r in runs):
        raise SystemExit("step_table.py: CSVs of run_step.sh and run_mixed.sh cannot be mixed")
    ratios = {}
    for run_rows, _ in runs:
        for r in run_rows:
            ratios.setdefault(tuple(r[k] for k in KEY), []).append(floor_ratio(r))
    print(f"CPU: {cpu or 'not recorded in the CSV'}; {len(runs)} run(s), the table is {argv[1]}")
    print()
    head = ["shapes", "optimizer", "type", "gradients", "step", "ranks x threads", "step ms",
            "x fused loop", "x floor"]
    if len(runs) > 1:
        head.append(f"x floor, all {len(runs)} runs")
    head += ["statistics x read-only", "x kernel bandwidth"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        ratio = floor_ratio(r)
        target = floor_target(r)
        grads = r["grads"]
        if int(r["projected_tensors"]) > 0 and grads == "orthogonal":
            grads = f"orthogonal ({r['projected_tensors']} projected)"
        floor_text = f"{ratio:.2f}" + (" (dp floor)" if r["mode"] != "sharded" else "")
        sharded32 = r["mode"] == "sharded" and r["dtype"] == "fp32"
        cells = [SHAPES.get(r["set"], r["set"]), OPTS.get(r["opt"], r["opt"]), r["dtype"], grads,
                 MODES.get(r["mode"], r["mode"]), f"{r['ranks']} x {r['threads']}",
                 f"{float(r['step_ms']):.1f}", f"{float(r['step_over_fused']):.2f}",
                 bold_if(floor_text, target is not None and ratio <= target)]
        if len(runs) > 1:
            every = ratios[tuple(r[k] for k in KEY)]
            cells.append(f"{min(every):.2f}-{max(every):.2f}" if len(every) > 1 else "-")
        stats = float(r["readonly_over_stats"])
        cells.append(bold_if(f"{stats:.2f}", stats >= 0.9))
        bw = float(r["effective_over_kernel"])
        cells.append(bold_if(f"{bw:.2f}", int(r["threads"]) > 1 and bw >= 0.9) if sharded32 else "-")
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except BrokenPipeError:  # the table piped into head and the like
        sys.stderr.close()
        sys.exit(0)
