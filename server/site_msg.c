/* site_msg: the decoding and checks of server/site_msg.h, shared by the server and the relay. */
#include "server/site_msg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/util.h"

const void *site_msg_aligned4(const void *p, size_t count, void **owned)
{
    if (!p || ((uintptr_t)p & 3) == 0)
        return p;
    *owned = FN_MALLOC(count ? 4 * count : 1);
    memcpy(*owned, p, 4 * count);
    return *owned;
}

sites_site_t *site_msg_hello(sites_t *s, const wire_msg_t *msg, int64_t run, json_t *extra)
{
    sites_site_t *site = sites_hello(s, msg);
    json_t *hdr = json_pack("{s:s, s:i}", "type", "welcome", "client_id", site ? site->id : 0);
    if (extra)
        json_object_update(hdr, extra);
    json_decref(extra);
    if (!site) {
        json_decref(hdr);
        return NULL;
    }
    return sites_send(s, site, run, hdr, NULL, 0) < 0 ? NULL : site;
}

sites_site_t *site_msg_of_round(sites_t *s, const wire_msg_t *msg, int64_t run, int open, long long round)
{
    sites_site_t *site = sites_find(s, msg->user_id);
    long long r = wire_get_int(msg, "round", -1), id = wire_get_int(msg, "run", -1);
    if (!site || id != run || !open || r != round) {
        log_warn("%s %s: %s for run %lld round %lld ignored (now: run %lld round %lld%s)", sites_noun(s),
                 msg->user_id, msg->type, id, r, (long long)run, round, open ? "" : ", not open");
        return NULL;
    }
    site->fd = msg->srcfd;
    return site;
}

static double finite_or_nan(const json_t *v)
{
    return json_is_number(v) && isfinite(json_number_value(v)) ? json_number_value(v) : NAN;
}

/* The frames of a compressed update, in the order the header's "frames" names them: top-k
 * sends "indices" (uint32) first; then "values" (float32), or "codes" (uint8) and "scales"
 * (float32) when quantized. The encoding must be the one the experiment asked for. */
static int decode_compressed(const wire_msg_t *msg, size_t m, const compress_spec_t *spec, float *scratch,
                             float *decoded, err_t *err)
{
    const uint32_t *idx = NULL;
    const float *values = NULL, *scales = NULL;
    const uint8_t *codes = NULL;
    size_t nidx = 0, nvalues = 0, ncodes = 0, nscales = 0;
    int f = 0, want = (spec->topk > 0) + (spec->quantize ? 2 : 1);
    if (msg->nframes != want)
        return err_set(err, FN_EPROTO, "%d frames (the experiment's compression needs %d)", msg->nframes, want);
    if (spec->topk > 0 && !(idx = wire_frame_data(msg, f++, WIRE_U32, &nidx)))
        return err_set(err, FN_EPROTO, "frame 0 is not the uint32 indices");
    if (spec->quantize) {
        codes = wire_frame_data(msg, f++, WIRE_U8, &ncodes);
        scales = wire_frame_data(msg, f++, WIRE_F32, &nscales);
        if (!codes || !scales)
            return err_set(err, FN_EPROTO, "expected uint8 codes and float32 scales");
    } else if (!(values = wire_frame_data(msg, f++, WIRE_F32, &nvalues))) {
        return err_set(err, FN_EPROTO, "expected float32 values");
    }
    void *own[3] = {NULL, NULL, NULL};
    idx = site_msg_aligned4(idx, nidx, &own[0]);
    values = site_msg_aligned4(values, nvalues, &own[1]);
    scales = site_msg_aligned4(scales, nscales, &own[2]);
    int rc = compress_decode(spec, m, idx, nidx, values, nvalues, codes, ncodes, scales, nscales, scratch, decoded,
                             err);
    for (int i = 0; i < 3; i++)
        free(own[i]);
    return rc;
}

int site_msg_update(const wire_msg_t *msg, size_t m, const compress_spec_t *spec, float *scratch, float *decoded,
                    site_update_t *u, err_t *err)
{
    memset(u, 0, sizeof *u);
    size_t count = 0;
    const float *values = NULL;
    int rc;
    if (spec && (spec->quantize || spec->topk > 0)) {
        if ((rc = decode_compressed(msg, m, spec, scratch, decoded, err)) < 0)
            return err_wrap(err, "compressed update: ");
        values = decoded;
        count = m;
    } else if (msg->nframes == 1) {
        values = wire_frame_data(msg, 0, WIRE_F32, &count);
    }
    u->samples = wire_get_int(msg, "samples", -1);
    if (!values || count != m || u->samples < 1 || u->samples > FN_MAX_SAMPLES)
        return err_set(err, FN_EPROTO,
                       "expected %zu float32 values and a sample count, got %zu values and %lld samples", m,
                       values ? count : 0, u->samples);
    u->values = site_msg_aligned4(values, count, &u->owned);
    /* Out-of-range statistics are dropped (NAN: not counted in the round's training metrics),
     * the update itself is still good. */
    u->loss = finite_or_nan(json_object_get(msg->header, "loss"));
    u->accuracy = finite_or_nan(json_object_get(msg->header, "accuracy"));
    if (!isnan(u->loss) && !site_train_loss_ok(u->loss)) {
        log_warn("%s: update with training loss %g ignored (expected 0 to %g)", msg->user_id, u->loss, SITE_MAX_LOSS);
        u->loss = NAN;
    }
    if (!isnan(u->accuracy) && !site_train_accuracy_ok(u->accuracy)) {
        log_warn("%s: update with training accuracy %g ignored (expected 0 to 1)", msg->user_id, u->accuracy);
        u->accuracy = NAN;
    }
    return 0;
}

void site_update_release(site_update_t *u)
{
    free(u->owned);
    u->owned = NULL;
}

void site_update_bound(const sites_t *s, const sites_site_t *site, site_update_t *u)
{
    if (u->samples <= site->samples)
        return;
    log_warn("%s %s: update claims %lld samples, more than the %lld it registered with; weighed as %lld", sites_noun(s),
             site->name, u->samples, site->samples, site->samples);
    u->samples = site->samples;
}

int site_train_loss_ok(double loss) { return loss >= 0 && loss <= SITE_MAX_LOSS; }

int site_train_accuracy_ok(double accuracy) { return accuracy >= 0 && accuracy <= 1; }

int site_train_stats_ok(double loss, double accuracy)
{
    return site_train_loss_ok(loss) && site_train_accuracy_ok(accuracy);
}

int site_eval_check(long long samples, double loss, double accuracy, err_t *err)
{
    if (samples < 0 || samples > FN_MAX_SAMPLES || !isfinite(loss) || !(accuracy >= 0 && accuracy <= 1))
        return err_set(err, FN_EINVAL, "eval_result with %lld samples, loss %g, accuracy %g", samples, loss, accuracy);
    return 0;
}

int site_msg_eval(const wire_msg_t *msg, site_eval_t *ev, err_t *err)
{
    ev->samples = wire_get_int(msg, "samples", -1);
    ev->loss = finite_or_nan(json_object_get(msg->header, "loss"));
    ev->accuracy = finite_or_nan(json_object_get(msg->header, "accuracy"));
    return site_eval_check(ev->samples, ev->loss, ev->accuracy, err);
}
