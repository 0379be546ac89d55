/*
 * ckpt_tool - a checkpointing program for the fault tests (ckpt_faults.sh).
 *
 *   ckpt_tool stress PATH GENERATIONS   step, save PATH (user value generation = g), repeat
 *   ckpt_tool verify PATH               load PATH on this many ranks, recompute its generation
 *                                       from scratch, exit 0 only if both agree bit for bit
 *   ckpt_tool soak DIR STEPS EVERY      STEPS steps with a checkpoint every EVERY steps (DIR/ck.h5,
 *                                       and DIR/half.h5 at STEPS/2); final state into DIR/final.bin
 *   ckpt_tool resume DIR STEPS EVERY    load DIR/half.h5 and go on to STEPS the same way; final
 *                                       state into DIR/resumed.bin (compare the two with cmp)
 *
 * The problem is the AdamP variant of tests/problem.h, so a checkpoint of generation g is the
 * state after exactly g steps: a torn or mixed file cannot pass verify.
 */
#include "problem.h"

static int die(const char *what, const char *msg)
{
  if (test_rank() == 0) fprintf(stderr, "ckpt_tool %s: %s\n", what, msg);
  MPI_Finalize();
  return 1;
}

int main(int argc, char **argv)
{
  MPI_Init(&argc, &argv);
  if (argc < 3 || (strcmp(argv[1], "stress") && strcmp(argv[1], "verify") && strcmp(argv[1], "soak") &&
                    strcmp(argv[1], "resume")))
    return die("usage", "stress PATH N | verify PATH | soak DIR STEPS EVERY | resume DIR STEPS EVERY");
  const problem_variant *v = &problem_variants[0];
  char err[512];
  adampi *opt = problem_create(MPI_COMM_WORLD, v, ADAMPI_NONFINITE_ERROR, err, sizeof err);
  if (opt == NULL) return die(argv[1], err);
  int64_t lo, hi;
  adampi_shard(opt, adampi_rank(opt), &lo, &hi);
  float *w = calloc((size_t)(hi - lo) + 1, sizeof *w);
  problem_init(opt, w);

  if (strcmp(argv[1], "soak") == 0 || strcmp(argv[1], "resume") == 0) {
    int steps = argc > 3 ? atoi(argv[3]) : 2000, every = argc > 4 ? atoi(argv[4]) : 100, from = 0;
    char ck[4096], half[4096], dump[4096];
    snprintf(ck, sizeof ck, "%s/ck%d.h5", argv[2], adampi_size(opt));
    snprintf(half, sizeof half, "%s/half.h5", argv[2]);
    snprintf(dump, sizeof dump, "%s/%s.bin", argv[2], argv[1][0] == 's' ? "final" : "resumed");
    if (argv[1][0] == 'r') {
      if (adampi_load(opt, half, w, NULL) != ADAMPI_OK) return die("resume", adampi_last_error(opt));
      from = steps / 2;
    }
    for (int s = from; s < steps; s += every) {
      int to = s + every < steps ? s + every : steps;
      if (problem_steps(opt, MPI_COMM_WORLD, v, w, s, to, NULL, NULL) != ADAMPI_OK) return die(argv[1], adampi_last_error(opt));
      if (adampi_save(opt, ck, w, NULL) != ADAMPI_OK) return die(argv[1], adampi_last_error(opt));
      if (to == steps / 2 && argv[1][0] == 's' && adampi_save(opt, half, w, NULL) != ADAMPI_OK)
        return die(argv[1], adampi_last_error(opt));
    }
    problem_result r;
    problem_collect(opt, MPI_COMM_WORLD, v->kind, w, &r);
    if (test_rank() == 0) {
      FILE *f = fopen(dump, "wb");
      if (f == NULL) return die(argv[1], "cannot write the final state");
      fwrite(r.params, sizeof(float), (size_t)r.numel, f);
      fwrite(r.s0, sizeof(float), (size_t)r.numel, f);
      fwrite(r.s1, sizeof(float), (size_t)r.numel, f);
      fwrite(r.steps, sizeof r.steps, 1, f);
      fclose(f);
      printf("ckpt_tool %s: steps %d..%d on %d ranks, a checkpoint every %d\n", argv[1], from, steps, adampi_size(opt), every);
    }
    problem_release(&r);
  } else if (strcmp(argv[1], "stress") == 0) {
    int gens = argc > 3 ? atoi(argv[3]) : 1;
    for (int g = 1; g <= gens; g++) {
      if (problem_steps(opt, MPI_COMM_WORLD, v, w, g - 1, g, NULL, NULL) != ADAMPI_OK) return die("stress", adampi_last_error(opt));
      adampi_user user = {0};
      adampi_user_set(&user, "generation", g);
      adampi_save_options o = adampi_save_defaults();
      o.user = &user;
      if (adampi_save(opt, argv[2], w, &o) != ADAMPI_OK) return die("stress", adampi_last_error(opt));
    }
    if (test_rank() == 0) printf("ckpt_tool stress: saved %d generations\n", gens);
  } else {
    adampi_user user = {0};
    adampi_load_options o = adampi_load_defaults();
    o.user = &user;
    int64_t g = -1;
    if (adampi_load(opt, argv[2], w, &o) != ADAMPI_OK) return die("verify", adampi_last_error(opt));
    if (adampi_user_get(&user, "generation", &g) != ADAMPI_OK) return die("verify", "no generation in the file");
    problem_result loaded, fresh;
    problem_collect(opt, MPI_COMM_WORLD, v->kind, w, &loaded);
    adampi *ref = problem_create(MPI_COMM_WORLD, v, ADAMPI_NONFINITE_ERROR, err, sizeof err);
    float *rw = calloc((size_t)(hi - lo) + 1, sizeof *rw);
    problem_init(ref, rw);
    problem_steps(ref, MPI_COMM_WORLD, v, rw, 0, (int)g, NULL, NULL);
    problem_collect(ref, MPI_COMM_WORLD, v->kind, rw, &fresh);
    char diff[400];
    problem_compare(&loaded, &fresh, diff, sizeof diff);
    if (diff[0]) return die("verify", diff);
    if (test_rank() == 0) printf("ckpt_tool verify: generation %lld ok\n", (long long)g);
    problem_release(&loaded), problem_release(&fresh);
    free(rw);
    adampi_free(&ref);
  }
  free(w);
  adampi_free(&opt);
  MPI_Finalize();
  return 0;
}
