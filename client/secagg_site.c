#include "client/secagg_site.h"

#include "client/scatter.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/log.h"
#include "common/util.h"
#include "crypto/dp.h"

static const char *const in[] = {"sa_keys", "sa_relay", "sa_unmask_req"};

struct secagg_site {
    secagg_client_t *c;
    uint64_t round_id;
    long long round; /* the federated round, echoed in headers */
    uint32_t *x;     /* the encoded update until the masked input leaves */
    size_t m;
    int step;        /* 0: awaiting sa_keys, 1: sa_relay, 2: sa_unmask_req, 3: done */
};

static int get_u32(const json_t *o, const char *key, uint32_t lo, uint32_t hi, uint32_t *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)lo || json_integer_value(v) > (json_int_t)hi)
        return -1;
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The optional "dp" object: distributed discrete Gaussian noise (crypto/dp.h). The plan, and with
 * it the scale, is recomputed here from the public parameters rather than trusted. The count the
 * noise assumes must not exceed the threshold t: this site refuses to unmask a sum of fewer than
 * t inputs, so every sum revealed carries at least `assumed` noise shares. */
static int parse_dp(const json_t *info, const secagg_params_t *p, double clip, int *has_dp, dp_ddp_plan_t *plan,
                    err_t *err)
{
    const json_t *dp = json_object_get(info, "dp");
    *has_dp = dp != NULL;
    if (!dp)
        return 0;
    const json_t *sigma = json_object_get(dp, "sigma");
    uint32_t assumed;
    if (!json_is_object(dp) || !json_is_number(sigma) || !(json_number_value(sigma) >= 0) ||
        !isfinite(json_number_value(sigma)) ||
        get_u32(dp, "assumed", 1, p->t ? p->t : secagg_default_t(p->n), &assumed) < 0)
        return err_set(err, FN_EPROTO, "malformed distributed DP parameters (sigma >= 0, 1 <= assumed <= t)");
    if (dp_ddp_plan(json_number_value(sigma), clip, p->n, assumed, p->m, p->bits ? p->bits : 32, plan, err) < 0)
        return err_set(err, FN_EPROTO, "%s", err->msg);
    return 0;
}

/* secagg_site_parse plus the DP plan, for secagg_site_begin. */
static int parse_all(const json_t *info, secagg_params_t *p, uint32_t **ids_out, uint32_t *self, double *clip,
                     double *scale, int *has_dp, dp_ddp_plan_t *plan, err_t *err)
{
    memset(p, 0, sizeof *p);
    *ids_out = NULL;
    *has_dp = 0;
    const json_t *rid = json_object_get(info, "round_id"), *ids = json_object_get(info, "ids");
    const json_t *c = json_object_get(info, "clip"), *seed = json_object_get(info, "graph_seed");
    if (!json_is_object(info) || !json_is_integer(rid) || json_integer_value(rid) < 0 || !json_is_array(ids) ||
        json_array_size(ids) < 2 || json_array_size(ids) > SECAGG_MAX_N || !json_is_number(c) ||
        !(json_number_value(c) > 0) || !isfinite(json_number_value(c)) || !json_is_string(seed) ||
        json_string_length(seed) != 64)
        return err_set(err, FN_EPROTO, "malformed secure aggregation parameters");
    p->round_id = (uint64_t)json_integer_value(rid);
    p->n = (uint32_t)json_array_size(ids);
    if (get_u32(info, "t", 0, p->n, &p->t) < 0 || get_u32(info, "m", 1, UINT32_MAX, &p->m) < 0 ||
        get_u32(info, "bits", 8, 32, &p->bits) < 0 || get_u32(info, "k", 0, p->n, &p->k) < 0 ||
        get_u32(info, "t_nb", 0, p->n + 1, &p->t_nb) < 0 || get_u32(info, "self", 1, UINT32_MAX, self) < 0)
        return err_set(err, FN_EPROTO, "malformed secure aggregation parameters (t, m, bits, k, t_nb or self)");
    const char *hex = json_string_value(seed);
    for (int i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return err_set(err, FN_EPROTO, "malformed secure aggregation graph seed");
        p->graph_seed[i] = (uint8_t)(hi << 4 | lo);
    }
    uint32_t *v = FN_MALLOC((size_t)p->n * sizeof *v);
    int mine = 0;
    for (uint32_t i = 0; i < p->n; i++) {
        const json_t *e = json_array_get(ids, i);
        if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > UINT32_MAX) {
            free(v);
            return err_set(err, FN_EPROTO, "malformed secure aggregation id list");
        }
        v[i] = (uint32_t)json_integer_value(e);
        mine |= v[i] == *self;
    }
    p->ids = v;
    int rc = mine ? secagg_params_check(p, err)
                  : err_set(err, FN_EPROTO, "this site (%u) is not among the round's clients", *self);
    *clip = json_number_value(c);
    if (rc == 0)
        rc = parse_dp(info, p, *clip, has_dp, plan, err);
    /* Recomputed from n, C and bits (and the noise plan): a wrong scale from the server could make
     * the sum wrap. */
    *scale = *has_dp ? plan->scale : secagg_choose_scale(p->n, *clip, p->bits ? p->bits : 32);
    if (rc == 0 && !(*scale > 0))
        rc = err_set(err, FN_EPROTO, "no fixed-point scale fits %u clients clipped to %g", p->n, *clip);
    if (rc < 0) {
        free(v);
        p->ids = NULL;
        return rc == FN_EPROTO ? rc : err_set(err, FN_EPROTO, "%s", err->msg);
    }
    *ids_out = v;
    return 0;
}

int secagg_site_parse(const json_t *info, secagg_params_t *p, uint32_t **ids_out, uint32_t *self, double *clip,
                      double *scale, err_t *err)
{
    int has_dp;
    dp_ddp_plan_t plan;
    return parse_all(info, p, ids_out, self, clip, scale, &has_dp, &plan, err);
}

int secagg_site_begin(const json_t *info, const float *update, size_t m, secagg_site_t **out, secagg_buf_t *advert,
                      err_t *err)
{
    *out = NULL;
    secagg_params_t p;
    uint32_t *ids, self;
    double clip, f;
    int has_dp;
    dp_ddp_plan_t plan;
    int rc = parse_all(info, &p, &ids, &self, &clip, &f, &has_dp, &plan, err);
    if (rc < 0)
        return rc;
    if (p.m != m) {
        free(ids);
        return err_set(err, FN_EPROTO, "secure aggregation of %u values, the update has %zu", p.m, m);
    }
    secagg_site_t *s = FN_CALLOC(1, sizeof *s);
    s->round_id = p.round_id;
    s->m = m;
    s->x = FN_MALLOC(m * sizeof *s->x);
    /* Under DP the site adds its share of the noise before masking: the server never sees a
     * value without it (dp_ddp_encode clips to the same C). */
    rc = has_dp ? dp_ddp_encode(&plan, update, m, s->x, err)
                : secagg_encode(update, m, clip, f, p.bits ? p.bits : 32, s->x, err);
    if (rc == 0)
        rc = secagg_client_new(&p, self, &s->c, advert, err);
    free(ids);
    if (rc < 0) {
        secagg_site_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int secagg_site_step(secagg_site_t *s, const char *type, const uint8_t *data, size_t len, const char **reply_type,
                     secagg_buf_t *reply, err_t *err)
{
    static const char *const outt[] = {"sa_shares", "sa_masked", "sa_unmask"};
    if (s->step > 2 || strcmp(type, in[s->step]) != 0)
        return err_set(err, FN_EPROTO, "%s out of order (expected %s)", type, s->step > 2 ? "nothing" : in[s->step]);
    int rc;
    if (s->step == 0)
        rc = secagg_client_share_keys(s->c, data, len, reply, err);
    else if (s->step == 1)
        rc = secagg_client_masked_input(s->c, data, len, s->x, reply, err);
    else
        rc = secagg_client_unmask(s->c, data, len, reply, err);
    if (rc == FN_EAUTH && s->step == 1) {
        /* Only this site can tell whose shares were garbage: it names them to the server,
         * which leaves them out of the round's next attempt, instead of aborting silently. */
        err_t e2;
        s->step = 3; /* aborted: nothing more from this site this round */
        if (secagg_client_accusation(s->c, reply, &e2) == 0)
            *reply_type = "sa_accuse";
        return rc;
    }
    if (rc < 0)
        return rc;
    if (s->step == 1) { /* the encoded update is no longer needed */
        sodium_memzero(s->x, s->m * sizeof *s->x);
        free(s->x);
        s->x = NULL;
    }
    *reply_type = outt[s->step++];
    return 0;
}

uint64_t secagg_site_round_id(const secagg_site_t *s) { return s->round_id; }
int secagg_site_done(const secagg_site_t *s) { return s->step > 2; }

void secagg_site_free(secagg_site_t *s)
{
    if (!s)
        return;
    secagg_client_free(s->c);
    if (s->x) {
        sodium_memzero(s->x, s->m * sizeof *s->x);
        free(s->x);
    }
    free(s);
}

static int send_sa(void *sock, json_t *hdr, const secagg_buf_t *b, err_t *err)
{
    wire_frame_t f = {.name = "secagg", .dtype = WIRE_U8, .data = b->data, .count = b->len};
    long long sent = wire_send(sock, NULL, 0, hdr, &f, 1, 0, err);
    json_decref(hdr);
    return sent < 0 ? (int)sent : 0;
}

int secagg_site_on_message(secagg_site_t **state, trainer_t *t, const engine_dataset_t *d, const int *idx, int n,
                           void *sock, int64_t run, wire_msg_t *msg, err_t *err)
{
    if (strcmp(msg->type, "train") == 0) {
        const json_t *info = json_object_get(msg->header, "secagg");
        if (!info)
            return 0;
        secagg_site_free(*state); /* a new round: the old one is over whatever its state */
        *state = NULL;
        update_result_t res;
        int rc = trainer_compute(t, d, idx, n, msg, &res, err);
        if (rc < 0)
            return rc;
        secagg_buf_t adv = {0};
        /* A federated search: the path's change goes in the round's common layout (client/scatter.h). */
        const json_t *scatter = json_object_get(msg->header, "scatter");
        float *full = NULL;
        size_t flen = 0;
        if (scatter && (rc = client_scatter_expand(scatter, t->model, res.update, res.m, &full, &flen, err)) < 0)
            return rc;
        rc = secagg_site_begin(info, full ? full : res.update, full ? flen : res.m, state, &adv, err);
        free(full);
        if (rc < 0)
            return rc == FN_EPROTO || rc == FN_EINVAL ? err_set(err, FN_EPROTO, "%s", err->msg) : rc;
        (*state)->round = res.round;
        json_t *hdr = json_pack("{s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:f}", "type", "sa_advert", "run",
                                (json_int_t)run, "round", (json_int_t)res.round, "sa_round",
                                (json_int_t)(*state)->round_id, "samples", (json_int_t)res.samples, "loss", res.loss,
                                "accuracy", res.accuracy, "train_seconds", res.seconds);
        rc = send_sa(sock, hdr, &adv, err);
        secagg_buf_free(&adv);
        return rc < 0 ? rc : 1;
    }
    if (strncmp(msg->type, "sa_", 3) != 0)
        return 0;
    secagg_site_t *s = *state;
    json_t *rid = json_object_get(msg->header, "sa_round");
    if (!s || !json_is_integer(rid) || (uint64_t)json_integer_value(rid) != s->round_id)
        return err_set(err, FN_EPROTO, "%s for a secure aggregation round this site is not in", msg->type);
    size_t len = 0;
    const uint8_t *data = wire_frame_data(msg, 0, WIRE_U8, &len);
    if (!data)
        return err_set(err, FN_EPROTO, "%s without its secagg frame", msg->type);
    if (s->step > 2 || strcmp(msg->type, in[s->step]) != 0) /* a stray message: the round goes on */
        return err_set(err, FN_EPROTO, "%s out of order (expected %s)", msg->type, s->step > 2 ? "nothing" : in[s->step]);
    secagg_buf_t reply = {0};
    const char *type = NULL;
    int rc = secagg_site_step(s, msg->type, data, len, &type, &reply, err);
    if (rc < 0) {
        /* The library aborted this client: it reveals nothing more this round, but it names the
         * senders of share ciphertexts that failed to authenticate (an ACCUSE holds only ids). */
        err_t e2;
        if (type && reply.data) {
            json_t *hdr = json_pack("{s:s, s:I, s:I, s:I}", "type", type, "run", (json_int_t)run, "round",
                                    (json_int_t)s->round, "sa_round", (json_int_t)s->round_id);
            if (send_sa(sock, hdr, &reply, &e2) < 0)
                log_warn("sa_accuse not sent: %s", e2.msg);
        }
        secagg_buf_free(&reply);
        secagg_site_free(s);
        *state = NULL;
        return err_set(err, FN_EPROTO, "secure aggregation round aborted: %s", err->msg);
    }
    json_t *hdr = json_pack("{s:s, s:I, s:I, s:I}", "type", type, "run", (json_int_t)run, "round",
                            (json_int_t)s->round, "sa_round", (json_int_t)s->round_id);
    rc = send_sa(sock, hdr, &reply, err);
    secagg_buf_free(&reply);
    if (secagg_site_done(s)) {
        secagg_site_free(s);
        *state = NULL;
    }
    return rc < 0 ? rc : 1;
}
