/* test_lib_golden.c — the loss library against the committed float64 golden vectors.
 *
 * tests/golden/lib_golden.txt is written by tests/reference/focal_ref.py (float64
 * torch formulas, autograd gradients, cross-checked against torchvision). Every
 * case runs on every instruction-set variant this CPU supports. Tolerance, as
 * the library promises: relative 1e-5, or absolute 1e-7 where the reference
 * value is below 1e-2.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "focal.h"

/* The vectors' file: the Makefile builds in its absolute path; a path given as the one argument wins. */
#ifndef GOLDEN_PATH
#error "GOLDEN_PATH: the path of tests/golden/lib_golden.txt (the Makefile defines it)"
#endif
static const char *golden_path = GOLDEN_PATH;

typedef struct vec {
  double *v;
  size_t n;
} vec;

typedef struct gcase {
  char name[128];
  fl_params p;
  float *alpha_c;
  float *pos_weight;   /* from a "pos_weight" line, when the case has one */
  int64_t n, m, c;
  vec x, labels, targets, weights, loss, grad, grad_norm, scores, pred, rows;
} gcase;

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)len + 1);
  if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
    free(buf);
    buf = NULL;
  }
  if (buf) buf[len] = '\0';
  fclose(f);
  return buf;
}

/* Parses the numbers after the first word of line into v. */
static void parse_vec(const char *line, vec *v) {
  const char *s = strchr(line, ' ');
  size_t cap = 16;
  v->n = 0;
  v->v = malloc(cap * sizeof *v->v);
  while (s && *s) {
    char *end;
    double d = strtod(s, &end);
    if (end == s) break;
    if (v->n == cap) {
      cap *= 2;
      v->v = realloc(v->v, cap * sizeof *v->v);
    }
    v->v[v->n++] = d;
    s = end;
  }
}

static void free_case(gcase *g) {
  vec *all[] = {&g->x, &g->labels, &g->targets, &g->weights, &g->loss, &g->grad,
                &g->grad_norm, &g->scores, &g->pred, &g->rows};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->v);
  free(g->alpha_c);
  free(g->pos_weight);
  memset(g, 0, sizeof *g);
}

static void parse_params(const char *line, gcase *g) {
  char loss[64], prof[64], red[64], input[64], ac[4096];
  double gamma, alpha, eps, gp, gn, clip;
  long long ignore;
  int got = sscanf(line, "params %63s %63s %63s %63s %lf %lf %lf %lf %lf %lf %lld %4095s", loss, prof, red, input,
                   &gamma, &alpha, &eps, &gp, &gn, &clip, &ignore, ac);
  assert_int_equal(got, 12);
  fl_loss l;
  assert_int_equal(fl_loss_parse(loss, &l), 0);
  fl_params_init(&g->p, l);
  assert_int_equal(fl_profile_parse(prof, &g->p.profile), 0);
  assert_int_equal(fl_reduction_parse(red, &g->p.reduction), 0);
  g->p.input = strcmp(input, "probs") == 0 ? FL_INPUT_PROBS : FL_INPUT_LOGITS;
  g->p.gamma = (float)gamma;
  g->p.alpha = (float)alpha;
  g->p.epsilon = (float)eps;
  g->p.gamma_pos = (float)gp;
  g->p.gamma_neg = (float)gn;
  g->p.clip = (float)clip;
  g->p.ignore_index = ignore;
  if (strcmp(ac, "-") != 0) {
    size_t cap = 1;
    for (const char *s = ac; *s; s++) cap += *s == ',';
    g->alpha_c = malloc(cap * sizeof *g->alpha_c);
    size_t k = 0;
    for (char *s = ac; s && *s && k < cap;) {
      char *end;
      g->alpha_c[k++] = strtof(s, &end);
      s = *end == ',' ? end + 1 : NULL;
    }
    g->p.alpha_c = g->alpha_c;
  }
}

/* Reads the next case from *cursor; returns 0 at the end of the file. */
static int next_case(char **cursor, gcase *g) {
  memset(g, 0, sizeof *g);
  char *line;
  int in_case = 0;
  while ((line = strsep(cursor, "\n")) != NULL) {
    if (line[0] == '#' || line[0] == '\0') continue;
    if (strncmp(line, "case ", 5) == 0) {
      snprintf(g->name, sizeof g->name, "%s", line + 5);
      in_case = 1;
    } else if (strncmp(line, "params ", 7) == 0) {
      parse_params(line, g);
    } else if (strncmp(line, "pos_weight ", 11) == 0) {
      vec pw;
      parse_vec(line, &pw);
      g->pos_weight = malloc((pw.n ? pw.n : 1) * sizeof *g->pos_weight);
      for (size_t k = 0; k < pw.n; k++) g->pos_weight[k] = (float)pw.v[k];
      free(pw.v);
      g->p.pos_weight = g->pos_weight;
    } else if (strncmp(line, "shape ", 6) == 0) {
      long long n, m, c;
      assert_int_equal(sscanf(line, "shape %lld %lld %lld", &n, &m, &c), 3);
      g->n = n;
      g->m = m;
      g->c = c;
    } else if (strncmp(line, "x ", 2) == 0) {
      parse_vec(line, &g->x);
    } else if (strncmp(line, "labels ", 7) == 0) {
      parse_vec(line, &g->labels);
    } else if (strncmp(line, "targets ", 8) == 0) {
      parse_vec(line, &g->targets);
    } else if (strncmp(line, "weights ", 8) == 0) {
      parse_vec(line, &g->weights);
    } else if (strncmp(line, "loss ", 5) == 0) {
      parse_vec(line, &g->loss);
    } else if (strncmp(line, "grad ", 5) == 0) {
      parse_vec(line, &g->grad);
    } else if (strncmp(line, "grad_norm ", 10) == 0) {
      parse_vec(line, &g->grad_norm);
    } else if (strncmp(line, "scores ", 7) == 0) {
      parse_vec(line, &g->scores);
    } else if (strncmp(line, "pred ", 5) == 0) {
      parse_vec(line, &g->pred);
    } else if (strncmp(line, "rows ", 5) == 0) {
      parse_vec(line, &g->rows);
    } else if (strcmp(line, "end") == 0 && in_case) {
      return 1;
    }
  }
  return 0;
}

/* The library's accuracy promise. */
static int close_enough(double got, double ref) {
  double err = fabs(got - ref);
  if (fabs(ref) < 1e-2) return err <= 1e-7;
  return err <= 1e-5 * fabs(ref);
}

typedef struct tally {
  int cases, values, failures;
  double worst_rel;
  char worst_at[200];
} tally;

static void check(tally *t, const char *what, const char *name, size_t idx, double got, double ref) {
  t->values++;
  if (fabs(ref) >= 1e-2) {
    double rel = fabs(got - ref) / fabs(ref);
    if (rel > t->worst_rel) {
      t->worst_rel = rel;
      snprintf(t->worst_at, sizeof t->worst_at, "%s %s[%zu]", name, what, idx);
    }
  }
  if (!close_enough(got, ref)) {
    if (t->failures < 40) fprintf(stderr, "  %s: %s[%zu] = %.9g, reference %.9g\n", name, what, idx, got, ref);
    t->failures++;
  }
}

static void run_case(const gcase *g, tally *t) {
  const size_t nel = (size_t)(g->n * g->m * g->c);
  const size_t nrow = (size_t)(g->n * g->m);
  float *x = malloc(nel * sizeof *x);
  float *targets = NULL, *weights = NULL;
  int64_t *labels = NULL;
  for (size_t e = 0; e < nel; e++) x[e] = (float)g->x.v[e];
  fl_batch b = {.n = g->n, .m = g->m, .c = g->c, .x = x, .label_type = FL_LABEL_I64};
  if (g->labels.n) {
    labels = malloc(nrow * sizeof *labels);
    for (size_t r = 0; r < nrow; r++) labels[r] = (int64_t)g->labels.v[r];
    b.labels = labels;
  } else {
    targets = malloc(nel * sizeof *targets);
    for (size_t e = 0; e < nel; e++) targets[e] = (float)g->targets.v[e];
    b.targets = targets;
  }
  if (g->weights.n) {
    weights = malloc(g->weights.n * sizeof *weights);
    for (size_t e = 0; e < g->weights.n; e++) weights[e] = (float)g->weights.v[e];
    b.weights = weights;
  }
  float *loss = calloc((size_t)g->n, sizeof *loss);
  float *grad = calloc(nel, sizeof *grad);
  float *gn = calloc((size_t)g->n, sizeof *gn);
  float *loss2 = calloc((size_t)g->n, sizeof *loss2);
  fl_score *sc = calloc((size_t)g->n, sizeof *sc);
  fl_out out = {.loss = loss, .grad = grad, .grad_norm = gn, .scores = sc};
  int64_t where = 0;
  int rc = fl_eval(&out, &b, &g->p, &where);
  if (rc != 0) {
    fprintf(stderr, "  %s: fl_eval returned %s (where %lld)\n", g->name, fl_errname(rc), (long long)where);
    t->failures++;
  } else {
    for (int64_t i = 0; i < g->n; i++) check(t, "loss", g->name, (size_t)i, loss[i], g->loss.v[i]);
    for (size_t e = 0; e < nel; e++) check(t, "grad", g->name, e, grad[e], g->grad.v[e]);
    for (int64_t i = 0; i < g->n; i++) check(t, "grad_norm", g->name, (size_t)i, gn[i], g->grad_norm.v[i]);
    for (int64_t i = 0; i < g->n; i++) {
      const double *r = g->scores.v + 8 * i;
      check(t, "p_t", g->name, (size_t)i, sc[i].p_t, r[0]);
      check(t, "p_max", g->name, (size_t)i, sc[i].p_max, r[1]);
      check(t, "margin", g->name, (size_t)i, sc[i].margin, r[2]);
      check(t, "norm_margin", g->name, (size_t)i, sc[i].norm_margin, r[3]);
      check(t, "entropy", g->name, (size_t)i, sc[i].entropy, r[4]);
      check(t, "cw_entropy", g->name, (size_t)i, sc[i].cw_entropy, r[5]);
      check(t, "el2n", g->name, (size_t)i, sc[i].el2n, r[6]);
      check(t, "correct", g->name, (size_t)i, sc[i].correct, r[7]);
      if (sc[i].pred != (int32_t)g->pred.v[i] || sc[i].rows != (int32_t)g->rows.v[i]) {
        fprintf(stderr, "  %s: sample %lld pred/rows %d/%d, reference %d/%d\n", g->name, (long long)i, sc[i].pred,
                sc[i].rows, (int)g->pred.v[i], (int)g->rows.v[i]);
        t->failures++;
      }
    }
    /* The loss alone (no gradient, no scores) takes other branches: same numbers. */
    fl_out only = {.loss = loss2};
    assert_int_equal(fl_eval(&only, &b, &g->p, NULL), 0);
    for (int64_t i = 0; i < g->n; i++) check(t, "loss-only", g->name, (size_t)i, loss2[i], g->loss.v[i]);
  }
  t->cases++;
  free(x);
  free(targets);
  free(weights);
  free(labels);
  free(loss);
  free(loss2);
  free(grad);
  free(gn);
  free(sc);
}

static void run_variant(const char *isa) {
  if (fl_isa_force(isa) != 0) {
    fprintf(stderr, "  %s: not supported by this CPU, not run\n", isa);
    return;
  }
  char *text = slurp(golden_path);
  if (!text) fail_msg("cannot read the golden vectors %s: %s", golden_path, strerror(errno));
  char *cursor = text;
  tally t = {0};
  gcase g;
  while (next_case(&cursor, &g)) {
    run_case(&g, &t);
    free_case(&g);
  }
  free(text);
  fl_isa_force(NULL);
  fprintf(stderr, "  %s: %d cases, %d values, %d outside tolerance, worst relative error %.2e (%s)\n", isa, t.cases,
          t.values, t.failures, t.worst_rel, t.worst_at);
  assert_true(t.cases > 100);
  assert_int_equal(t.failures, 0);
}

static void test_lib_golden_generic(void **state) {
  (void)state;
  run_variant("generic");
}

static void test_lib_golden_x86_64_v3(void **state) {
  (void)state;
  run_variant("x86-64-v3");
}

static void test_lib_golden_x86_64_v4(void **state) {
  (void)state;
  run_variant("x86-64-v4");
}

int main(int argc, char **argv) {
  if (argc > 2) {
    fprintf(stderr, "usage: %s [lib_golden.txt]\n", argv[0]);
    return 2;
  }
  if (argc == 2) golden_path = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lib_golden_generic),
      cmocka_unit_test(test_lib_golden_x86_64_v3),
      cmocka_unit_test(test_lib_golden_x86_64_v4),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
