/* nas benchmark: weight sharing against standalone evaluation on the same architectures, in one
 * run (specs/nas.md). Prints candidates per CPU-hour of both (evaluations completed / (wall
 * seconds x cores used / 3600); the supernet's training time is amortised over every candidate it
 * scores), their ratio (target >= 10), and Kendall's tau-b between the supernet's scores and the
 * standalone validation accuracies of >= 20 architectures spanning the space by parameter count
 * (target >= 0.5). Sizes are arguments so that a small run fits a few minutes on a shared machine;
 * the defaults are that small run. Never fails on the numbers, only on errors.
 *
 * Measured on the shared 2-core machine (load 9-25, FEDNAS_THREADS=1), 2026-12-06:
 *   cell, 2000/300 images, standalone 2 epochs, supernet 6 epochs lr 0.1, 60 scored: 9.7x, tau-b 0.05
 *   macro, 5000/1000, standalone 1 epoch, supernet 3 epochs, 100 scored: 13.2x, tau-b -0.41
 *   macro, 2000/500, standalone 1 epoch, supernet 20 epochs lr 0.1, 40 scored: 1.3x, tau-b 0.07
 * The macro supernet was still at chance after 620 steps (8 ops x batch norm x 3 widths per depth,
 * no residuals: each choice's output basis differs; smaller op sets learn, slower the more ops),
 * so its scores rank nothing at these budgets; the cell supernet learns (38% train accuracy after
 * 186 steps) but the standalone accuracies of 2 epochs on 2000 images are themselves noisy.
 *
 * Diagnosis, 2026-12-07 (load 14-45, FEDNAS_THREADS=1, 2000 training / 500 validation images,
 * 10 supernet epochs = 310 one-path steps unless said; "acc" is the last epoch's training
 * accuracy of the drawn paths, chance 0.10). Sub-spaces via --space-json (6 layers, widths
 * 8/16/24, 2 reductions):
 *   conv3x3 only, batch norm always, lr 0.1:                  acc 0.664 (scores 0.66-0.72)
 *   conv3x3 only, batch norm searched, lr 0.1:                acc 0.253 (+ --wd 0.001: 0.253; lr 0.02: 0.148)
 *   conv3x3 only, no batch norm, lr 0.1:                      acc 0.104, every score identical (dead)
 *   conv3x3 only, no batch norm, lr 0.02:                     acc 0.490
 *   all 8 ops, batch norm always, lr 0.1:                     acc 0.135 (lr 0.02: 0.119)
 *   all 8 ops, batch norm searched (the default space):       acc 0.104 / 0.110 / 0.088 at lr 0.1 / 0.02 / 0.005
 *   the same, --paths 8 (4 epochs = 124 updates of 8 paths):  acc 0.098 at lr 0.05 and 0.02
 *   the same, --clip 0:                                        acc 0.119
 * (Those runs keyed tensors by depth, with one classifier for every path and batch norm as a
 * separate choice.)
 *
 * Diagnosis as a bug, 2026-12-07 (load 25-31, FEDNAS_THREADS=1, a scratch driver on 5000/10000
 * training images, batch 64, cosine lr 0.05 from step 0, mean training loss of the drawn paths;
 * chance is ln 10 = 2.303):
 *   one fixed path: trains exactly like standalone training of its model (loss and weights
 *   equal to the last bit, with and without clipping: tests/unit/test_nas_supernet_path.c), so
 *   the gather/scatter of weights, gradients, momentum and the schedule were not the fault;
 *   two alternating paths: 0.58 after 400 steps; uniform: 2.30 after 3000 steps; 4 / 16 / 64
 *   cycled paths (with conv-index keys and shared kernels, batch norm still searched): 1.12 /
 *   1.85 / 2.27 after 300. Sub-spaces, uniform, 600 steps (old keys):
 *   conv3x3 only 0.57, + widths 8/16/24 0.75, + batch norm searched 1.30, conv3x3+conv5x5 0.92,
 *   + sepconv3x3 1.13, + maxpool 1.47 (shifted depth keys), + identity 1.21, all 5 convs 2.29.
 * Design faults found and fixed (nas/supernet.h): a pool shifted the depth keys so one conv
 * tensor read the image in one path and 16 feature maps in another (now keys by convolution
 * index); one classifier read the last layer of any depth (now one per number of
 * convolutions); 5 conv ops x 2 batch-norm flags gave 10 unrelated tensors per position (now one
 * kernel per family: conv3x3/dilconv3x3 read the conv5x5's centre/lattice, the separable ops
 * likewise, and batch norm always on in the supernet, a candidate without it scored as its
 * twin). The same driver, uniform over the default space, 10000 images: 1200 steps lr 0.05: loss
 * 1.62 (before: 2.30 at 3000 steps); lr 0.1: 1.42, scores of 8 random paths 0.26-0.52.
 *
 * This bench after the fix (load 25-28, FEDNAS_THREADS=1, seed 1; 5000 training / 1000
 * validation images; standalone 1 epoch, SGD momentum 0.9 lr 0.05; supernet 15 epochs = 1170
 * steps lr 0.05; 20 + 40 scored): supernet last-epoch training accuracy 0.378 (loss 1.594);
 * tau-b 0.263 (of -loss 0.295, of params alone 0.232); 2.0x candidates per CPU-hour (3.6 s per
 * score; the supernet's 487 s amortised over only 60 candidates). The same with supernet lr 0.1,
 * 20 epochs (1560 steps; load 28 falling to 18 during the run, so its weight-sharing half ran on
 * a quieter machine): accuracy 0.421 (loss 1.474), tau-b 0.216 (-loss 0.253), 3.6x (1.2 s per
 * score). Not met: tau-b >= 0.5, 10x. The
 * standalone accuracies of 1 epoch on 5000 images are themselves noisy (0.36-0.71 for nets of
 * 2-10k parameters, largely whether they have batch norm, which the twin cannot see).
 *
 * What limits tau-b, 2026-12-07 (load 4-18, FEDNAS_THREADS=1, nice 5, seed 1, the same 20
 * architectures; --ref-seeds 2 trains each twice, the second run from other seeds):
 *   reference                                               run vs run  params  bn convs  (ref = mean of the 2)
 *   R1: 1 epoch of 5000 images, lr 0.05 constant, 1000 val    0.305     0.379   0.370
 *   R2: 0.25 epoch of the 50,000 (12,500 images, 196 steps),  0.484     0.474   0.262
 *       lr 0.05 cosine to 0, all 10,000 val: the recipe of the shipped experiments/nas-quarter-*
 *       searches (README), 57 s per candidate here (2274 s for 40 runs, load 8-18)
 * So one standalone run at the bench's old budget agrees with another seed's run at tau-b 0.31:
 * no supernet could show 0.5 against it. R2's runs agree at 0.48 (R1 and R2 means: 0.63); its
 * mean of two seeds is the reference now. Supernet scores against R2 (tau-b of accuracy; in
 * brackets without the two 6-convolution archs, where params alone give 0.399):
 *   uniform, 4 epochs of 20,000 images (1248 steps), lr 0.05, 10,000 val:  0.216 (0.407)
 *   the same scored on 2,000 val images:                                  0.185 (0.380)
 *   fair draws (nas/supernet_sample.c), otherwise the same:               0.179 (0.320)
 *   uniform, 8 epochs (2496 steps):                                       0.137 (0.255)
 *   one classifier per last-convolution width instead of per convolution
 *   count (a scratch build, not kept; 6-conv archs still 0.22-0.23):      0.147
 *   (15 epochs of 5000, lr 0.05, the run above, against R1's mean: 0.200; -loss 0.358)
 * Against R2 the supernet ranks worse than parameter count alone (0.474). Its worst misses are
 * the 6-convolution networks, among R2's best (0.77) and scored near the bottom (0.16-0.25): with
 * keys by convolution index and one classifier per convolution count, a uniform draw reaches
 * the sixth convolution and the 6-convolution classifier in (5/8)^6 = 6% of steps (75 of 1248),
 * against 99.7% for the first. Longer training did not help (8 epochs is worse than 4); fair
 * draws balance each layer's op but not depth. Cost at R2 (F1 run, load 16): supernet training
 * 432 s + 7.95 s per score (20 recalibration batches + 2000 val images) over 100 candidates =
 * 12.3 s per candidate against 57 s standalone: 4.6x. Scoring alone (7.95 s) caps the ratio
 * at 7x at this budget. The two halves ran at similar load, but the scratch run above, at load
 * 5, trained the same-sized supernet in 108 s and scored in 0.93 s: only same-run ratios count.
 * Against the shipped 2-epoch searches (nas-re-macro.json: 1562 steps per candidate, about 8x
 * R2's training) the same supernet would be far above 10x; not measured.
 * Commands (FEDNAS_THREADS=1 nice -n 5): the reference once,
 *   nas --train 5000 --val 10000 --sa-train 0 --epochs 0.25 --sa-schedule cosine --ref-seeds 2
 *       --supernet-epochs 0 --ref-out R2.ref
 * then each supernet against it (F1; --sampling fair, --supernet-epochs 8 for the others),
 *   nas --train 20000 --val 10000 --sa-train 0 --epochs 0.25 --sa-schedule cosine
 *       --supernet-epochs 4 --extra 80 --score-val 2000 --ref-in R2.ref
 *
 * Two more spaces, 2026-12-08 (an AMD EPYC with AVX-512, OpenBLAS Haswell kernels; two benches or
 * searches side by side, load 2-3, FEDNAS_THREADS=1; R2's reference recipe, 2 seed runs; --tsv
 * rows carry each genome). Convolution-only macro space of experiments/nas-quarterconv-*.json
 * (--space-json with ops conv3x3/sepconv3x3/dilconv3x3, widths 24/32/40, batch norm on):
 *   reference: 18.8 s per candidate; runs agree at tau-b 0.263 only (accuracies 0.769-0.808, a
 *   narrow spread); params alone 0.389
 *   supernet F1 (1248 steps, 121.6 s, 1.41 s per score over 100 candidates): tau-b 0.354 (-loss
 *   0.505), 7.2x; scored on all 10,000 validation images: 0.337 (-loss 0.526)
 * So the supernet agrees with the two runs' mean better than one run agrees with the other; at
 * this proxy the reference, not the supernet, caps tau-b. The cell space (--space cell):
 *   reference: 29.6 s per candidate; runs agree at 0.786 (accuracies 0.725-0.828); params alone
 *   0.776
 *   supernet F1 (135.7 s, 2.14 s per score): tau-b -0.069, 8.5x; lr 0.02: -0.084; 3 epochs of all
 *   50,000 (2343 steps): -0.121; scratch builds (not kept) keying the strided blocks and the
 *   classifier by cells per stage: -0.095, or every tensor (one supernet per cell count): -0.111
 * Its misses are not noise: two-cell width-16 networks whose cell has no edge 0->3 and node 2 =
 * avgpool of node 1 (standalone 0.815 and 0.828, among the best) score 0.09-0.40 in every run,
 * while pool- and skip-heavy cells score highest. Our reading: a node sums batch-normalised
 * convolution outputs with raw skip and pool terms whose scale depends on the path upstream, and
 * recalibration normalises only the former, so shared weights fit the mix of common paths.
 *
 * A stronger reference in the convolution-only space, 2026-12-08 (same machine; the reference ran
 * 02:42-04:06 UTC beside federated runs, load 6 falling to 2, so its 125 s per candidate is slow:
 * four times the quarter epoch's quiet 18.8 s would be 75 s): 1 epoch of all 50,000 images
 * (782 steps, cosine to 0), 2 seed runs of the same 20 architectures. The runs agree at tau-b
 * 0.105 only, worse than at a quarter epoch: run accuracies 0.74-0.88, one architecture 0.738 in one
 * run and 0.838 in the other; params alone 0.284. Supernets against it (load 1):
 *   F1 (1248 steps over 20,000, 114.8 s, 1.46 s per score, 100 candidates): tau-b 0.406 (-loss
 *   0.505), 48.0x as measured, 29x against the quiet 75 s
 *   3124 steps over all 50,000 (304.5 s, 1.61 s per score): tau-b 0.396 (-loss 0.295), 26.9x,
 *   16x against 75 s
 * Both clear 10x and again rank the two runs' mean better than one run ranks the other: at either
 * budget a standalone run here disagrees with another more than with the supernet. Commands:
 *   nas --space-json '{"type":"macro","layers":6,"ops":["conv3x3","sepconv3x3","dilconv3x3"],
 *       "widths":[24,32,40],"batchnorm":true,"reductions":2}' --train 5000 --val 10000 --sa-train 0
 *       --epochs 1 --sa-schedule cosine --ref-seeds 2 --supernet-epochs 0 --ref-out C1.ref
 *   then F1 as above with --epochs 1 --ref-in C1.ref (and --train 50000 for the longer one). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "engine/threadpool.h"
#include "nas/eval.h"
#include "nas/genome.h"
#include "nas/rank.h"
#include "nas/supernet.h"

char *openblas_get_corename(void);

/* The search spaces of experiments/nas-re-macro.json and nas-re-cell.json. */
static const char *const k_macro =
    "{\"space\":{\"type\":\"macro\",\"layers\":6,\"ops\":[\"conv3x3\",\"conv5x5\",\"sepconv3x3\",\"sepconv5x5\","
    "\"dilconv3x3\",\"maxpool3x3\",\"avgpool3x3\",\"identity\"],\"widths\":[8,16,24],\"batchnorm\":\"search\","
    "\"reductions\":2},\"strategy\":{\"name\":\"random\"}}";
static const char *const k_cell =
    "{\"space\":{\"type\":\"cell\",\"ops\":[\"none\",\"skip\",\"conv1x1\",\"conv3x3\",\"avgpool3x3\"],\"widths\":[8,16],"
    "\"cells_per_stage\":[1,2],\"stages\":3},\"strategy\":{\"name\":\"random\"}}";

static const char *const k_help =
    "Usage: nas [--space macro|cell] [--archs N] [--extra K] [--epochs E] [--supernet-epochs S]\n"
    "           [--train N] [--val N] [--lr LR] [--supernet-lr LR] [--batch B] [--seed S]\n"
    "  --archs N            architectures evaluated both ways, spread over the space by parameters (20)\n"
    "  --extra K            further random candidates the supernet scores, as a search would (80)\n"
    "  --epochs E           standalone budget per candidate (1; the shipped experiments use 2 and 0.25)\n"
    "  --supernet-epochs S  supernet training epochs (3; 0: no supernet, the standalone reference only)\n"
    "  --train N, --val N   training and validation images of the 50,000 / 10,000 split (2000, 500;\n"
    "                       0: all); --train is the supernet's\n"
    "  --sa-train N         the standalone runs' training images (default --train; 0: all 50,000)\n"
    "  --sa-schedule S      constant (default) or cosine: the standalone lr annealed to 0 over its budget\n"
    "  --ref-seeds N        standalone runs per architecture with different seeds; the reference is their\n"
    "                       mean accuracy, and tau-b between the runs is printed (1; 0: no standalone)\n"
    "  --score-val N        validation images a supernet score uses (default --val)\n"
    "  --ref-out FILE       write the standalone accuracies and their wall time to FILE\n"
    "  --ref-in FILE        read them from FILE (written with the same recipe) instead of training\n"
    "  --sampling S         the supernet's path draws: uniform (default) or fair (nas/supernet.h)\n"
    "  --tsv FILE           one row per architecture (hash, cost, standalone runs, supernet score, genome)\n"
    "  --lr, --supernet-lr  SGD (momentum 0.9) learning rates (0.05 both), batch --batch (64)\n"
    "Threads: FEDNAS_THREADS (the engine pool) is the \"cores used\" of both methods.\n";

#define MAX_SEEDS 4

typedef struct {
    nas_genome_t g;
    double params, flops;
    int convs, bns; /* convolutions in the canonical network, and those with batch norm */
    char hash[NAS_HASH_LEN];
} arch_t;

static int cmp_params(const void *a, const void *b)
{
    double x = ((const arch_t *)a)->params, y = ((const arch_t *)b)->params;
    return (x > y) - (x < y);
}

static int known(const arch_t *a, int n, const char *h)
{
    for (int i = 0; i < n; i++)
        if (strcmp(a[i].hash, h) == 0)
            return 1;
    return 0;
}

/* Convolutions of the canonical macro network and how many have batch norm (the supernet scores
 * a candidate as its batch-norm twin, so the second is what it cannot see). */
static void count_convs(const nas_space_t *sp, arch_t *a)
{
    nas_genome_t c;
    nas_genome_canonical(sp, &a->g, &c);
    a->convs = a->bns = 0;
    if (sp->kind != NAS_SPACE_MACRO)
        return;
    for (int i = 0; i < c.nlayers; i++) {
        int op = c.layer[i].op;
        if (op == NAS_OP_CONV3 || op == NAS_OP_CONV5 || op == NAS_OP_SEP3 || op == NAS_OP_SEP5 || op == NAS_OP_DIL3) {
            a->convs++;
            a->bns += c.layer[i].bn != 0;
        }
    }
}

/* n architectures spanning the space: the params quantiles of a pool of distinct random genomes
 * (uniform draws alone cluster around the typical size and miss both ends). */
static int pick_archs(const nas_space_t *sp, uint64_t seed, int n, arch_t *out, err_t *err)
{
    int pool_n = 10 * n;
    arch_t *pool = calloc((size_t)pool_n, sizeof *pool);
    rng_t r;
    rng_seed(&r, seed);
    int have = 0;
    for (int tries = 0; have < pool_n && tries < 100 * pool_n; tries++) {
        arch_t a;
        int rc = nas_genome_random(sp, &r, &a.g, err);
        if (rc == 0)
            rc = nas_genome_cost(sp, &a.g, &a.params, &a.flops, err);
        if (rc) {
            free(pool);
            return rc;
        }
        nas_genome_hash(sp, &a.g, a.hash);
        if (!known(pool, have, a.hash))
            pool[have++] = a;
    }
    if (have < n) {
        free(pool);
        return err_set(err, FN_EINVAL, "the space has only %d distinct architectures", have);
    }
    qsort(pool, (size_t)have, sizeof *pool, cmp_params);
    for (int i = 0; i < n; i++)
        out[i] = pool[(int)((double)i * (have - 1) / (n > 1 ? n - 1 : 1) + 0.5)];
    free(pool);
    return 0;
}

static double loadavg1(void)
{
    double l[3] = {0};
    return getloadavg(l, 3) > 0 ? l[0] : -1;
}

/* The standalone reference: accuracies acc[s * n + i] of architecture i trained with seed run s,
 * and the wall seconds of all of it; written to and read from a small text file so that one
 * expensive reference serves several supernet runs (the file names its recipe and load). */
typedef struct {
    int nseeds;
    double *acc;
    double seconds, load0, load1;
    int cores;
} ref_t;

static int ref_write(const char *path, const char *recipe, const arch_t *a, int n, const ref_t *r, err_t *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return err_set(err, FN_EIO, "--ref-out %s: cannot create it", path);
    fprintf(f, "fednas-nas-ref 1\n%s\nseeds %d seconds %.3f load %.2f %.2f cores %d\n", recipe, r->nseeds, r->seconds,
            r->load0, r->load1, r->cores);
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s", a[i].hash);
        for (int s = 0; s < r->nseeds; s++)
            fprintf(f, " %.6f", r->acc[s * n + i]);
        fputc('\n', f);
    }
    return fclose(f) ? err_set(err, FN_EIO, "--ref-out %s: write failed", path) : 0;
}

static int ref_read(const char *path, const char *recipe, const arch_t *a, int n, ref_t *r, err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(err, FN_EIO, "--ref-in %s: cannot open it", path);
    char line[1024], h[NAS_HASH_LEN];
    int rc = 0, ns = 0;
    if (!fgets(line, sizeof line, f) || strcmp(line, "fednas-nas-ref 1\n") != 0)
        rc = err_set(err, FN_EINVAL, "--ref-in %s: line 1: not a reference file of this bench", path);
    else if (!fgets(line, sizeof line, f) || strncmp(line, recipe, strlen(recipe)) != 0 || line[strlen(recipe)] != '\n')
        rc = err_set(err, FN_EINVAL, "--ref-in %s: line 2: written with another recipe (%.*s); pass the options that "
                     "wrote it", path, (int)strcspn(line, "\n"), line);
    else if (!fgets(line, sizeof line, f) ||
             sscanf(line, "seeds %d seconds %lf load %lf %lf cores %d", &ns, &r->seconds, &r->load0, &r->load1,
                    &r->cores) != 5 || ns < 1 || ns > MAX_SEEDS)
        rc = err_set(err, FN_EINVAL, "--ref-in %s: line 3: expected \"seeds N seconds T load L0 L1 cores C\"", path);
    if (rc == 0) {
        r->nseeds = ns;
        r->acc = calloc((size_t)(ns * n), sizeof *r->acc);
    }
    for (int i = 0; rc == 0 && i < n; i++) {
        if (fscanf(f, "%64s", h) != 1 || strcmp(h, a[i].hash) != 0) {
            rc = err_set(err, FN_EINVAL, "--ref-in %s: line %d: not architecture %d of this seed and space", path,
                         4 + i, i);
            break;
        }
        for (int s = 0; s < ns; s++)
            if (fscanf(f, "%lf", &r->acc[s * n + i]) != 1 || !(r->acc[s * n + i] >= 0 && r->acc[s * n + i] <= 1)) {
                rc = err_set(err, FN_EINVAL, "--ref-in %s: line %d: expected %d accuracies in [0, 1]", path, 4 + i, ns);
                break;
            }
    }
    fclose(f);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"space", required_argument, 0, 'p'},  {"archs", required_argument, 0, 'a'},
                                         {"extra", required_argument, 0, 'x'},  {"epochs", required_argument, 0, 'e'},
                                         {"supernet-epochs", required_argument, 0, 's'},
                                         {"train", required_argument, 0, 't'},  {"val", required_argument, 0, 'v'},
                                         {"lr", required_argument, 0, 'l'},     {"supernet-lr", required_argument, 0, 'L'},
                                         {"batch", required_argument, 0, 'b'},  {"seed", required_argument, 0, 'S'},
                                         {"space-json", required_argument, 0, 'J'}, {"clip", required_argument, 0, 'C'},
                                         {"wd", required_argument, 0, 'W'}, {"paths", required_argument, 0, 'P'},
                                         {"sa-train", required_argument, 0, 'T'}, {"sa-schedule", required_argument, 0, 'D'},
                                         {"ref-seeds", required_argument, 0, 'R'}, {"score-val", required_argument, 0, 'V'},
                                         {"ref-out", required_argument, 0, 'O'}, {"ref-in", required_argument, 0, 'I'},
                                         {"tsv", required_argument, 0, 'X'}, {"sampling", required_argument, 0, 'F'},
                                         {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    const char *space = "macro";
    int narch = 20, extra = 80, ntrain = 2000, nval = 500, batch = 64, c, sa_train = -1, nseeds = 1, score_val = -1;
    double epochs = 1, sn_epochs = 3, lr = 0.05, sn_lr = 0.05, clip = -1, wd = -1;
    int paths = 0, cosine = 0, fair = 0;
    const char *space_json = NULL, *ref_out = NULL, *ref_in = NULL, *tsv = NULL;
    uint64_t seed = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': space = optarg; break;
        case 'a': narch = atoi(optarg); break;
        case 'x': extra = atoi(optarg); break;
        case 'e': epochs = atof(optarg); break;
        case 's': sn_epochs = atof(optarg); break;
        case 't': ntrain = atoi(optarg); break;
        case 'v': nval = atoi(optarg); break;
        case 'l': lr = atof(optarg); break;
        case 'L': sn_lr = atof(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 'S': seed = strtoull(optarg, NULL, 10); break;
        case 'J': space_json = optarg; break;
        case 'C': clip = atof(optarg); break;
        case 'W': wd = atof(optarg); break;
        case 'P': paths = atoi(optarg); break;
        case 'T': sa_train = atoi(optarg); break;
        case 'D':
            if (strcmp(optarg, "cosine") != 0 && strcmp(optarg, "constant") != 0) {
                fprintf(stderr, "nas bench: --sa-schedule %s: expected constant or cosine\n", optarg);
                return 2;
            }
            cosine = strcmp(optarg, "cosine") == 0;
            break;
        case 'R': nseeds = atoi(optarg); break;
        case 'V': score_val = atoi(optarg); break;
        case 'O': ref_out = optarg; break;
        case 'I': ref_in = optarg; break;
        case 'X': tsv = optarg; break;
        case 'F':
            if (strcmp(optarg, "fair") != 0 && strcmp(optarg, "uniform") != 0) {
                fprintf(stderr, "nas bench: --sampling %s: expected uniform or fair\n", optarg);
                return 2;
            }
            fair = strcmp(optarg, "fair") == 0;
            break;
        case 'h': fputs(k_help, stdout); return 0;
        default: fputs(k_help, stderr); return 2;
        }
    }
    if (sa_train < 0)
        sa_train = ntrain;
    if ((strcmp(space, "macro") != 0 && strcmp(space, "cell") != 0) || narch < 2 || extra < 0 || !(epochs > 0) ||
        !(sn_epochs >= 0) || ntrain < 0 || nval < 0 || batch < 1 || nseeds < 0 || nseeds > MAX_SEEDS ||
        (nseeds == 0 && !ref_in && !(sn_epochs > 0)) || (ref_in && ref_out)) {
        fputs(k_help, stderr);
        return 2;
    }
    err_t err = {0};
    const char *sj = strcmp(space, "cell") == 0 ? k_cell : k_macro;
    json_error_t je;
    json_t *j = json_loads(sj, 0, &je);
    if (j && space_json) {
        /* --space-json: this space object instead of the built-in one */
        json_t *o = json_loads(space_json, 0, &je);
        if (!o) {
            fprintf(stderr, "nas bench: --space-json: %s (line %d, column %d)\n", je.text, je.line, je.column);
            return 2;
        }
        json_object_set_new(j, "space", o);
    }
    nas_config_t cfg;
    if (!j || nas_config_parse(j, "bench", sj, "nas", seed, &cfg, &err)) {
        fprintf(stderr, "nas bench: %s\n", err.msg);
        return 1;
    }
    json_decref(j);
    const nas_space_t *sp = &cfg.space;
    /* one load: the first N of the training split after the permutation, so the smaller of the
     * supernet's and the standalone runs' training sets is a head of the larger */
    int nload = ntrain == 0 || sa_train == 0 ? 0 : ntrain > sa_train ? ntrain : sa_train;
    nas_data_opts_t dop = {.split_seed = seed, .val_size = 10000, .train_subset = nload, .val_subset = nval,
                           .test_subset = 1};
    nas_data_t d;
    if (nas_data_load(&dop, &d, &err)) {
        fprintf(stderr, "nas bench: %s\n", err.msg);
        return 1;
    }
    nas_data_t dsa = d, dsn = d; /* views with fewer training (and scoring) images; d owns the memory */
    if (sa_train > 0 && sa_train < d.n_train)
        dsa.n_train = sa_train;
    if (ntrain > 0 && ntrain < d.n_train)
        dsn.n_train = ntrain;
    if (score_val > 0 && score_val < d.n_val)
        dsn.n_val = score_val;
    int cores = engine_threadpool_size(engine_threadpool_default());
    char recipe[512];
    snprintf(recipe, sizeof recipe,
             "seed %llu, %s space, %d architectures; standalone: %g epoch(s) over %d training images, SGD momentum 0.9 "
             "lr %g %s batch %d, validated on %d images", (unsigned long long)seed, space, narch, epochs, dsa.n_train,
             lr, cosine ? "cosine-annealed to 0" : "constant", batch, d.n_val);
    printf("nas bench: %s space, %d architectures both ways + %d more scored by the supernet\n", space, narch,
           sn_epochs > 0 ? extra : 0);
    printf("OpenBLAS core %s; engine pool %d threads (the cores used by both methods); load average %.2f at start\n",
           openblas_get_corename(), cores, loadavg1());
    if (ref_in)
        printf("reference (read from %s after the supernet): %s; the mean of its seed runs\n", ref_in, recipe);
    else
        printf("reference (trained now): %s; mean of %d seed run(s)\n", recipe, nseeds);
    if (sn_epochs > 0)
        printf("supernet: %g epoch(s) over %d training images, %s paths, lr %g (cosine), batch %d, %d recalibration "
               "batches per score, scored on %d validation images\n", sn_epochs, dsn.n_train, fair ? "fair" : "uniform",
               sn_lr, batch, NAS_RECAL_MIN_BATCHES, dsn.n_val);
    putchar('\n');
    fflush(stdout);

    arch_t *archs = calloc((size_t)(narch + extra), sizeof *archs);
    int rc = pick_archs(sp, rng_derive(seed, 1), narch, archs, &err);
    /* the extra candidates: random ones, distinct from each other and the spanning set */
    rng_t xr;
    rng_seed(&xr, rng_derive(seed, 2));
    int nx = 0;
    for (int tries = 0; rc == 0 && sn_epochs > 0 && nx < extra && tries < 1000 * (extra + 1); tries++) {
        arch_t a;
        if ((rc = nas_genome_random(sp, &xr, &a.g, &err)))
            break;
        nas_genome_hash(sp, &a.g, a.hash);
        if (!known(archs, narch + nx, a.hash))
            archs[narch + nx++] = a;
    }
    for (int i = 0; i < narch + nx; i++)
        count_convs(sp, &archs[i]);
    double *sa = calloc((size_t)narch, sizeof *sa), *ws = calloc((size_t)(narch + nx), sizeof *ws),
           *wl = calloc((size_t)(narch + nx), sizeof *wl);
    ref_t ref = {.nseeds = nseeds, .cores = cores};

    /* standalone: each architecture trained from scratch and validated, once per seed run (a
     * --ref-in file is read after the supernet, so a run may start while the file's run ends) */
    if (rc == 0 && !ref_in && nseeds > 0) {
        ref.acc = calloc((size_t)(nseeds * narch), sizeof *ref.acc);
        nas_eval_opts_t eo;
        memset(&eo, 0, sizeof eo);
        engine_train_config_default(&eo.train);
        eo.train.batch_size = batch;
        eo.train.optim = engine_optim_defaults(ENGINE_OPTIM_SGD, (float)lr);
        eo.train.optim.momentum = 0.9f;
        eo.train.schedule = engine_schedule_constant(lr);
        if (cosine)
            eo.train.schedule.type = ENGINE_SCHED_COSINE; /* total 0: over the whole budget, to min_lr 0 */
        eo.epochs = epochs;
        ref.load0 = loadavg1();
        double t0 = fn_mono();
        for (int s = 0; rc == 0 && s < nseeds; s++)
            for (int i = 0; rc == 0 && i < narch; i++) {
                nas_eval_result_t r;
                json_t *arch;
                if ((rc = nas_genome_decode(sp, &archs[i].g, &arch, &err)))
                    break;
                /* seed run 0 keeps the seeds of the bench's earlier measurements */
                eo.seed = rng_derive(seed, (s == 0 ? 100 : 100000 + 1000 * (uint64_t)s) + (uint64_t)i);
                rc = nas_eval_run(arch, &dsa, &eo, &r, NULL, &err);
                json_decref(arch);
                ref.acc[s * narch + i] = r.ok ? r.accuracy : 0; /* a diverged candidate is the worst there is */
                fprintf(stderr, "\rstandalone seed run %d/%d, %d/%d (%.0fs)   ", s + 1, nseeds, i + 1, narch,
                        fn_mono() - t0);
            }
        fprintf(stderr, "\n");
        ref.seconds = fn_mono() - t0;
        ref.load1 = loadavg1();
        if (rc == 0 && ref_out)
            rc = ref_write(ref_out, recipe, archs, narch, &ref, &err);
    }

    /* weight sharing: one supernet, trained once, scores every candidate */
    nas_supernet_opts_t so;
    nas_supernet_opts_default(&so);
    so.batch_size = batch;
    so.lr = sn_lr;
    so.seed = rng_derive(seed, 3);
    if (clip >= 0)
        so.clip_norm = clip;
    if (wd >= 0)
        so.weight_decay = wd;
    if (paths > 0)
        so.paths_per_step = paths;
    so.sampling = fair ? NAS_SUPERNET_SAMPLE_FAIR : NAS_SUPERNET_SAMPLE_UNIFORM;
    nas_supernet_t *sn = NULL;
    nas_supernet_stats_t st = {0};
    double t_train = 0, t_score = 0;
    if (rc == 0 && sn_epochs > 0)
        rc = nas_supernet_create(sp, &so, &sn, &err);
    if (rc == 0 && sn) {
        double t0 = fn_mono();
        rc = nas_supernet_train(sn, &dsn.train_src, dsn.train_idx, dsn.n_train, sn_epochs, &st, &err);
        t_train = fn_mono() - t0;
        t0 = fn_mono();
        for (int i = 0; rc == 0 && i < narch + nx; i++) {
            nas_supernet_score_t r;
            rc = nas_supernet_score(sn, &archs[i].g, &dsn, &r, &err);
            ws[i] = r.accuracy;
            wl[i] = -r.loss;
        }
        t_score = fn_mono() - t0;
    }
    if (rc) {
        fprintf(stderr, "nas bench: %s\n", err.msg);
        return 1;
    }
    int status = 0;
    if (ref_in && (rc = ref_read(ref_in, recipe, archs, narch, &ref, &err))) {
        fprintf(stderr, "nas bench: %s (the supernet's scores follow without it)\n", err.msg);
        free(ref.acc);
        ref = (ref_t){0};
        status = 1;
    }
    for (int s = 0; s < ref.nseeds; s++)
        for (int i = 0; i < narch; i++)
            sa[i] += ref.acc[s * narch + i] / ref.nseeds;

    printf("%-4s %9s %8s %5s %3s %10s", "arch", "params", "MFLOPs", "convs", "bn", "standalone");
    for (int s = 0; ref.nseeds > 1 && s < ref.nseeds; s++)
        printf("  run%d ", s + 1);
    printf(" %9s %9s\n", "supernet", "-sn loss");
    for (int i = 0; i < narch; i++) {
        printf("%-4d %9.0f %8.2f %5d %3d %10.4f", i, archs[i].params, archs[i].flops / 1e6, archs[i].convs,
               archs[i].bns, sa[i]);
        for (int s = 0; ref.nseeds > 1 && s < ref.nseeds; s++)
            printf(" %.4f", ref.acc[s * narch + i]);
        printf(" %9.4f %9.4f\n", ws[i], wl[i]);
    }
    if (tsv) {
        FILE *f = fopen(tsv, "w");
        for (int i = 0; f && i < narch; i++) {
            fprintf(f, "%d\t%s\t%.0f\t%.0f\t%d\t%d\t%.6f\t%.6f\t%.6f", i, archs[i].hash, archs[i].params,
                    archs[i].flops, archs[i].convs, archs[i].bns, sa[i], ws[i], wl[i]);
            for (int s = 0; s < ref.nseeds; s++)
                fprintf(f, "\t%.6f", ref.acc[s * narch + i]);
            json_t *gj = NULL;
            char *gs = nas_genome_to_json(sp, &archs[i].g, &gj, &err) == 0 ? json_dumps(gj, JSON_COMPACT) : NULL;
            fprintf(f, "\t%s\n", gs ? gs : "-");
            free(gs);
            json_decref(gj);
        }
        if (!f || fclose(f))
            fprintf(stderr, "nas bench: --tsv %s: cannot write it\n", tsv);
    }
    double *pv = calloc((size_t)narch, sizeof *pv), *bv = calloc((size_t)narch, sizeof *bv);
    for (int i = 0; i < narch; i++) {
        pv[i] = archs[i].params;
        bv[i] = archs[i].bns;
    }
    putchar('\n');
    if (ref.nseeds > 1) {
        /* the reference's own agreement: no supernet can agree with the mean much better than one
         * standalone run agrees with another */
        for (int s = 0; s < ref.nseeds; s++)
            for (int q = s + 1; q < ref.nseeds; q++) {
                double t = NAN;
                if (nas_kendall_tau_b(ref.acc + s * narch, ref.acc + q * narch, narch, &t, &err))
                    printf("tau-b between standalone seed runs %d and %d: %s\n", s + 1, q + 1, err.msg);
                else
                    printf("tau-b between standalone seed runs %d and %d: %.3f (the reference's own noise)\n", s + 1,
                           q + 1, t);
            }
    }
    double tau_params = NAN, tau_bn = NAN;
    if (ref.nseeds > 0) {
        nas_kendall_tau_b(pv, sa, narch, &tau_params, &err);
        nas_kendall_tau_b(bv, sa, narch, &tau_bn, &err);
        printf("naive baselines: tau-b of parameter count alone %.3f; of convolutions with batch norm %.3f\n",
               tau_params, tau_bn);
    }
    if (sn) {
        printf("\nsupernet: %ld steps over %d distinct paths, %.1fs; final epoch train loss %.3f acc %.3f\n",
               st.steps, st.paths, t_train, st.loss, st.accuracy);
    }
    double rate_sa = ref.seconds > 0 ? narch * ref.nseeds / (ref.seconds * ref.cores / 3600.0) : NAN;
    double n_ws = narch + nx, rate_ws = sn ? n_ws / ((t_train + t_score) * cores / 3600.0) : NAN;
    printf("\n%-34s %12s %12s %14s\n", "method", "evaluations", "wall s", "cand./CPU-hour");
    if (ref.seconds > 0)
        printf("%-34s %12d %12.1f %14.1f   (load %.1f -> %.1f%s)\n", "standalone", narch * ref.nseeds, ref.seconds,
               rate_sa, ref.load0, ref.load1, ref_in ? ", measured by the run that wrote --ref-in" : "");
    if (sn) {
        printf("%-34s %12.0f %12.1f %14.1f\n", "weight sharing (train + score)", n_ws, t_train + t_score, rate_ws);
        printf("%-34s %12s %12.1f %14s\n", "  of which supernet training", "", t_train, "");
        printf("%-34s %12s %12.2f %14s\n", "  per score (recalibrate + val)", "", t_score / n_ws, "");
    }
    if (sn && ref.nseeds > 0) {
        double tau = NAN, tau_loss = NAN;
        if (nas_kendall_tau_b(ws, sa, narch, &tau, &err))
            printf("tau-b (supernet accuracy): %s\n", err.msg);
        nas_kendall_tau_b(wl, sa, narch, &tau_loss, &err);
        printf("\nratio weight sharing / standalone: %.1fx (target >= 10)\n", rate_ws / rate_sa);
        printf("Kendall tau-b, supernet accuracy vs standalone accuracy over %d architectures: %.3f (target >= 0.5)\n",
               narch, tau);
        printf("  for reference: tau-b of -supernet loss %.3f; of parameter count alone %.3f\n", tau_loss, tau_params);
    }
    printf("load average %.2f at the end\n", loadavg1());
    free(pv);
    free(bv);
    free(ref.acc);
    free(sa);
    free(ws);
    free(wl);
    free(archs);
    nas_supernet_free(sn);
    nas_data_free(&d);
    return status;
}
