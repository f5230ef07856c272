/* bench_lib.c — single-threaded throughput of the loss library's kernels.
 *
 * For every instruction-set variant the CPU supports and every case below,
 * runs fl_eval REPS times on the same (N, C) float32 batch and prints the
 * median elements per second, one JSON object per line (tests/bench/bench_lib.py
 * reads them and adds torchvision's figures measured in the same run).
 *
 * usage: bench_lib [--n N] [--c C] [--reps R] [--variant NAME] [--case NAME]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "focal.h"

typedef struct bcase {
  const char *name;
  fl_loss loss;
  int dense;      /* one-hot float targets instead of class indices */
  int scores;     /* also compute the difficulty scores */
  int grad;       /* also compute the gradient (1), or only its norm per sample (2: what a recorded batch does) */
} bcase;

static const bcase cases[] = {
    {"sigmoid_focal", FL_SIGMOID_FOCAL, 0, 0, 0},
    {"sigmoid_focal_onehot", FL_SIGMOID_FOCAL, 1, 0, 0},
    {"sigmoid_focal+scores", FL_SIGMOID_FOCAL, 0, 1, 0},
    {"sigmoid_focal+grad", FL_SIGMOID_FOCAL, 0, 0, 1},
    {"softmax_focal", FL_SOFTMAX_FOCAL, 0, 0, 0},
    {"sigmoid_focal+scores+grad_norm", FL_SIGMOID_FOCAL, 0, 1, 2},
    {"softmax_focal+scores", FL_SOFTMAX_FOCAL, 0, 1, 0},
    {"softmax_focal+scores+grad_norm", FL_SOFTMAX_FOCAL, 0, 1, 2},
    {"sigmoid_focal_star", FL_SIGMOID_FOCAL_STAR, 0, 0, 0},
    {"asl", FL_ASL, 0, 0, 0},
};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int64_t n = 100000, c = 80;
  int reps = 9;
  const char *only_variant = NULL, *only_case = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) n = atoll(argv[++i]);
    else if (strcmp(argv[i], "--c") == 0 && i + 1 < argc) c = atoll(argv[++i]);
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--variant") == 0 && i + 1 < argc) only_variant = argv[++i];
    else if (strcmp(argv[i], "--case") == 0 && i + 1 < argc) only_case = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--n N] [--c C] [--reps R] [--variant NAME] [--case NAME]\n", argv[0]);
      return 2;
    }
  }
  float *x = malloc((size_t)(n * c) * sizeof *x);
  float *t = calloc((size_t)(n * c), sizeof *t);
  float *grad = malloc((size_t)(n * c) * sizeof *grad);
  int32_t *y = malloc((size_t)n * sizeof *y);
  float *loss = malloc((size_t)n * sizeof *loss);
  fl_score *sc = malloc((size_t)n * sizeof *sc);
  double *times = malloc((size_t)reps * sizeof *times);
  if (!x || !t || !grad || !y || !loss || !sc || !times) return 1;
  /* logits ~ N(0, 3) by the sum of uniforms; labels uniform over the classes */
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (int64_t i = 0; i < n * c; i++) {
    float u = 0;
    for (int k = 0; k < 4; k++) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      u += (float)(s >> 40) / 16777216.0f;
    }
    x[i] = (u - 2.0f) * 5.2f;
  }
  for (int64_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    y[i] = (int32_t)((s >> 33) % (uint64_t)c);
    t[i * c + y[i]] = 1.0f;
  }
  const char *variants[] = {"x86-64-v4", "x86-64-v3", "generic"};
  for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
    if (only_variant && strcmp(only_variant, variants[v]) != 0) continue;
    if (fl_isa_force(variants[v]) != 0) continue;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
      const bcase *bc = &cases[k];
      if (only_case && strcmp(only_case, bc->name) != 0) continue;
      fl_params p;
      fl_params_init(&p, bc->loss);
      fl_batch b = {.n = n, .m = 1, .c = c, .x = x, .label_type = FL_LABEL_I32};
      if (bc->dense) b.targets = t;
      else b.labels = y;
      fl_out o = {.loss = loss, .scores = bc->scores ? sc : NULL, .grad = bc->grad == 1 ? grad : NULL,
                  .grad_norm = bc->grad == 2 ? grad : NULL};
      if (fl_eval(&o, &b, &p, NULL) != 0) return 1; /* warm-up, page-in */
      for (int r = 0; r < reps; r++) {
        double t0 = now();
        int rc = fl_eval(&o, &b, &p, NULL);
        times[r] = now() - t0;
        if (rc != 0) return 1;
      }
      qsort(times, (size_t)reps, sizeof *times, cmp_double);
      double med = times[reps / 2];
      printf("{\"variant\": \"%s\", \"case\": \"%s\", \"n\": %lld, \"c\": %lld, \"median_s\": %.6f, "
             "\"melem_per_s\": %.1f}\n",
             variants[v], bc->name, (long long)n, (long long)c, med, (double)(n * c) / med / 1e6);
      fflush(stdout);
    }
  }
  fl_isa_force(NULL);
  free(x);
  free(t);
  free(grad);
  free(y);
  free(loss);
  free(sc);
  free(times);
  return 0;
}
