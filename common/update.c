/* update: the message a site sends upward after a round, as the server reads it: the change to
 * the weights with the example count, loss and accuracy, plain or compressed (common/compress.h)
 * with error feedback. Client agents, simulated sites and relays (their aggregate) send it. */
#include "common/update.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/compress.h"
#include "common/log.h"
#include "common/rng.h"
#include "common/util.h"

/* The update's header. Loss and accuracy are left out when not finite (a relay none of whose
 * clients reported them): JSON has no NaN, and the server treats them as optional. */
static json_t *header(const update_result_t *res, int64_t run)
{
    json_t *hdr = json_pack("{s:s, s:I, s:I, s:I, s:f}", "type", "update", "run", (json_int_t)run, "round",
                            (json_int_t)res->round, "samples", (json_int_t)res->samples, "train_seconds",
                            isfinite(res->seconds) ? res->seconds : 0.0);
    if (hdr && isfinite(res->loss) && isfinite(res->accuracy)) {
        json_object_set_new(hdr, "loss", json_real(res->loss));
        json_object_set_new(hdr, "accuracy", json_real(res->accuracy));
    }
    return hdr;
}

int update_send(const update_result_t *res, void *sock, int64_t run, err_t *err)
{
    json_t *hdr = header(res, run);
    wire_frame_t f = {.name = "update", .dtype = WIRE_F32, .data = res->update, .count = res->m};
    long long sent = wire_send(sock, NULL, 0, hdr, &f, 1, 0, err);
    json_decref(hdr);
    if (sent < 0)
        return (int)sent;
    log_debug("round %lld: loss %.4f accuracy %.4f in %.2f s", res->round, res->loss, res->accuracy, res->seconds);
    return 0;
}

void update_feedback_free(update_feedback_t *fb)
{
    free(fb->residual);
    memset(fb, 0, sizeof *fb);
}

static int parse_compression(const json_t *c, compress_spec_t *spec, int *ef, err_t *err)
{
    memset(spec, 0, sizeof *spec);
    *ef = 0;
    json_t *q = json_object_get(c, "quantize"), *k = json_object_get(c, "topk"), *e = json_object_get(c, "error_feedback");
    if (!json_is_object(c) || (q && (!json_is_integer(q) || json_integer_value(q) != 8)) ||
        (k && (!json_is_number(k) || !(json_number_value(k) > 0 && json_number_value(k) < 1))) ||
        (e && !json_is_boolean(e)) || (!q && !k))
        return err_set(err, FN_EPROTO, "malformed compression object in a train message");
    spec->quantize = q ? 8 : 0;
    spec->topk = k ? json_number_value(k) : 0;
    *ef = json_is_true(e);
    return 0;
}

int update_send_compressed(const update_result_t *res, const wire_msg_t *train, uint64_t seed,
                           update_feedback_t *fb, void *sock, int64_t run, err_t *err)
{
    const json_t *c = json_object_get(train->header, "compression");
    if (!c)
        return update_send(res, sock, run, err);
    compress_spec_t spec;
    int ef, rc;
    if ((rc = parse_compression(c, &spec, &ef, err)) < 0)
        return rc;
    size_t m = res->m;
    const float *x = res->update;
    float *sum = NULL;
    if (ef && fb) {
        if (fb->m != m) { /* a new architecture: nothing carried over */
            free(fb->residual);
            fb->residual = FN_CALLOC(m ? m : 1, sizeof *fb->residual);
            fb->m = m;
        }
        sum = FN_MALLOC((m ? m : 1) * sizeof *sum);
        for (size_t i = 0; i < m; i++)
            sum[i] = res->update[i] + fb->residual[i];
        x = sum;
    }
    compress_enc_t enc;
    if ((rc = compress_encode(&spec, x, m, rng_derive(seed, 0xc0de), &enc, err)) < 0) {
        free(sum);
        return rc;
    }
    if (sum) {
        /* residual = what was meant minus what the server will decode */
        float *scratch = FN_MALLOC((enc.n ? enc.n : 1) * sizeof *scratch);
        rc = compress_decode(&spec, m, enc.indices, enc.indices ? enc.n : 0, enc.values, enc.values ? enc.n : 0,
                             enc.codes, enc.codes ? enc.n : 0, enc.scales, enc.nscales, scratch, fb->residual, err);
        free(scratch);
        if (rc == 0)
            for (size_t i = 0; i < m; i++)
                fb->residual[i] = sum[i] - fb->residual[i];
        free(sum);
        if (rc < 0) {
            compress_enc_free(&enc);
            return rc;
        }
    }
    wire_frame_t f[3];
    int nf = 0;
    if (enc.indices)
        f[nf++] = (wire_frame_t){.name = "indices", .dtype = WIRE_U32, .data = enc.indices, .count = enc.n};
    if (enc.codes) {
        f[nf++] = (wire_frame_t){.name = "codes", .dtype = WIRE_U8, .data = enc.codes, .count = enc.n};
        f[nf++] = (wire_frame_t){.name = "scales", .dtype = WIRE_F32, .data = enc.scales, .count = enc.nscales};
    } else {
        f[nf++] = (wire_frame_t){.name = "values", .dtype = WIRE_F32, .data = enc.values, .count = enc.n};
    }
    json_t *hdr = header(res, run);
    if (hdr)
        json_object_set(hdr, "compression", (json_t *)c);
    long long sent = wire_send(sock, NULL, 0, hdr, f, nf, 0, err);
    json_decref(hdr);
    compress_enc_free(&enc);
    if (sent < 0)
        return (int)sent;
    log_debug("round %lld: loss %.4f accuracy %.4f in %.2f s; compressed update of %lld bytes", res->round, res->loss,
              res->accuracy, res->seconds, sent);
    return 0;
}
