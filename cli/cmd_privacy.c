/* fednas privacy: the RDP accountant from the shell: epsilon for (q, sigma, steps, delta), or the
 * smallest noise multiplier that meets a target epsilon. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "crypto/dp.h"

static const char *const k_help =
    "Usage: fednas privacy --q Q --sigma S --steps T --delta D [--classic]\n"
    "       fednas privacy --q Q --steps T --delta D --target-epsilon E\n"
    "\n"
    "The privacy of T rounds of the sampled Gaussian mechanism (DP-SGD, DP-FedAvg): Renyi DP\n"
    "(Mironov, Talwar, Zhang 2019) over the orders 1.1..10.9 and 12..63, converted to (epsilon, delta)\n"
    "as Balle et al. 2020 (what Opacus reports). The first form prints epsilon and the best order; the\n"
    "second prints the smallest noise multiplier in [0.1, 100] whose epsilon is at most E.\n"
    "\n"
    "  --q Q                sampling rate per round, in (0, 1] (clients per round / clients; a fixed\n"
    "                       cohort of m of N is approximated by q = m/N)\n"
    "  --sigma S            noise multiplier: noise std / clipping norm, > 0\n"
    "  --steps T            rounds (or training steps), an integer >= 1\n"
    "  --delta D            delta, in (0, 1), typically below 1/(number of clients)\n"
    "  --target-epsilon E   find sigma for this epsilon instead (> 0)\n"
    "  --classic            also print epsilon by the older conversion rdp + ln(1/delta)/(order - 1)\n"
    "  -h, --help           this help\n"
    "\n"
    "Example: fednas privacy --q 0.01 --sigma 1.1 --steps 10000 --delta 1e-5\n";

/* A finite double that takes the whole argument. */
static int parse_double(const char *s, double *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    double v = strtod(s, &end);
    if (*end != '\0' || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

int cmd_privacy(int argc, char **argv)
{
    enum { OPT_Q = 256, OPT_SIGMA, OPT_STEPS, OPT_DELTA, OPT_TARGET, OPT_CLASSIC };
    static const struct option opts[] = {{"q", required_argument, 0, OPT_Q},
                                         {"sigma", required_argument, 0, OPT_SIGMA},
                                         {"steps", required_argument, 0, OPT_STEPS},
                                         {"delta", required_argument, 0, OPT_DELTA},
                                         {"target-epsilon", required_argument, 0, OPT_TARGET},
                                         {"classic", no_argument, 0, OPT_CLASSIC},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    double q = NAN, sigma = NAN, steps = NAN, delta = NAN, target = NAN;
    int classic = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        double *dst = NULL;
        const char *name = NULL;
        switch (c) {
        case OPT_Q: dst = &q, name = "--q"; break;
        case OPT_SIGMA: dst = &sigma, name = "--sigma"; break;
        case OPT_STEPS: dst = &steps, name = "--steps"; break;
        case OPT_DELTA: dst = &delta, name = "--delta"; break;
        case OPT_TARGET: dst = &target, name = "--target-epsilon"; break;
        case OPT_CLASSIC: classic = 1; break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        case ':':
            return cli_usage_error("privacy", "%s needs a value", argv[optind - 1]);
        default:
            return cli_usage_error("privacy", "unknown option \"%s\"", argv[optind - 1]);
        }
        if (dst && parse_double(optarg, dst) < 0)
            return cli_usage_error("privacy", "%s: \"%s\" is not a number", name, optarg);
    }
    if (optind != argc)
        return cli_usage_error("privacy", "unexpected argument \"%s\"", argv[optind]);

    int calibrate = !isnan(target);
    if (isnan(q))
        return cli_usage_error("privacy", "--q (the sampling rate) is required");
    if (isnan(steps))
        return cli_usage_error("privacy", "--steps (the number of rounds) is required");
    if (isnan(delta))
        return cli_usage_error("privacy", "--delta is required");
    if (calibrate && !isnan(sigma))
        return cli_usage_error("privacy", "give either --sigma (to compute epsilon) or --target-epsilon (to "
                                          "compute sigma), not both");
    if (!calibrate && isnan(sigma))
        return cli_usage_error("privacy", "--sigma (or --target-epsilon) is required");
    if (!(q > 0 && q <= 1))
        return cli_usage_error("privacy", "--q %g: the sampling rate must be in (0, 1]", q);
    if (!(steps >= 1 && steps <= 1e12 && steps == floor(steps)))
        return cli_usage_error("privacy", "--steps %g: expected an integer between 1 and 1e12", steps);
    if (!(delta > 0 && delta < 1))
        return cli_usage_error("privacy", "--delta %g: must be in (0, 1)", delta);
    if (!calibrate && !(sigma > 0))
        return cli_usage_error("privacy", "--sigma %g: the noise multiplier must be > 0", sigma);
    if (calibrate && !(target > 0))
        return cli_usage_error("privacy", "--target-epsilon %g: must be > 0", target);

    err_t err = {0};
    double eps = 0, order = 0;
    if (calibrate) {
        double s = 0;
        if (dp_calibrate_sigma(q, steps, delta, target, &s, &err) < 0)
            return cli_fail(&err);
        if (dp_epsilon(q, s, steps, delta, &eps, &order, &err) < 0)
            return cli_fail(&err);
        printf("sigma: %.6g\n", s);
        printf("epsilon: %.6g\n", eps);
        printf("order: %g\n", order);
        if (s == DP_SIGMA_MIN)
            printf("(0.1 is the lower end of the search: any sigma >= 0.1 meets epsilon %g)\n", target);
        printf("(q %g, %.0f steps, delta %g; target epsilon %g; Balle et al. 2020 conversion)\n", q, steps, delta,
               target);
        return EXIT_OK;
    }
    double rdp[DP_NUM_ORDERS];
    if (dp_rdp_compute(q, sigma, steps, rdp, &err) < 0 ||
        dp_rdp_to_epsilon(rdp, delta, DP_CONV_BALLE, &eps, &order, &err) < 0)
        return cli_fail(&err);
    printf("epsilon: %.6g\n", eps);
    printf("order: %g\n", order);
    if (classic) {
        double ec = 0, oc = 0;
        if (dp_rdp_to_epsilon(rdp, delta, DP_CONV_CLASSIC, &ec, &oc, &err) < 0)
            return cli_fail(&err);
        printf("epsilon (classic conversion): %.6g\n", ec);
        printf("order (classic conversion): %g\n", oc);
    }
    printf("(q %g, sigma %g, %.0f steps, delta %g; Balle et al. 2020 conversion)\n", q, sigma, steps, delta);
    return EXIT_OK;
}
