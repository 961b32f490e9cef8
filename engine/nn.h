/* nn: networks described in JSON, built from ops. Every trainable tensor is a named view into
 * one parameter blob (and the same offsets into one gradient blob), in layer order, weight
 * then bias: the flat vector federated code moves around. Batch-norm running statistics are
 * buffers: not trained, and stored right after the parameters in the same allocation, so that
 * parameters + buffers are one contiguous vector that federated code averages as a whole (as
 * FedAvg over a PyTorch state_dict averages BN statistics with the weights).
 *
 * Architectures (arch JSON; unknown keys are errors that name the key):
 *   {"type":"softmax"}                 flatten, linear(classes)
 *   {"type":"mlp","hidden":[128]}      flatten, (linear, relu)*, linear(classes)
 *   {"type":"cnn"}                     FedAvg CNN (McMahan et al. 2017): conv5x5 32 'same', relu,
 *                                      maxpool 2, conv5x5 64 'same', relu, maxpool 2, fc 512, relu,
 *                                      fc classes (1,663,370 parameters on 1x28x28, 10 classes)
 *   {"type":"lenet"}                   NIID-Bench LeNet: conv5x5 6, relu, pool, conv5x5 16, relu,
 *                                      pool, fc 120, relu, fc 84, relu, fc classes
 *   {"type":"resnet","widths":[16,32,64],"blocks":1}   stem conv3x3+BN+ReLU, per stage `blocks`
 *                                      basic blocks (the first of stages 2.. strided 2, 1x1
 *                                      conv+BN shortcut), global average pool, fc classes
 *   {"type":"layers","layers":[...]}   a list of layers (NAS genomes decode to this):
 *     {"type":"linear","out":N,"bias":true}
 *     {"type":"conv2d","out":N,"kernel":K,"stride":1,"padding":0|"same"|"valid","dilation":1,
 *      "groups":1,"bias":true}          (groups = channels = out: depthwise)
 *     {"type":"maxpool"|"avgpool","kernel":K,"stride":K,"padding":0}, {"type":"global_avgpool"}
 *     {"type":"batchnorm","momentum":0.1,"eps":1e-5}, {"type":"layernorm","eps":1e-5}
 *     {"type":"relu"|"gelu"|"sigmoid"|"tanh"}, {"type":"dropout","p":0.5}, {"type":"flatten"}
 *     {"type":"residual","body":[...],"shortcut":[...]}   body(x) + shortcut(x) (identity if absent)
 *     {"type":"concat","branches":[[...],[...]]}          branches joined along channels
 *     {"type":"lstm","hidden":H,"bias":true}  reads a 1-channel image row by row (or a vector one
 *                                      value per step) and gives the last hidden state [H]
 *     {"type":"cell","nodes":4,"edges":[{"from":0,"to":1,"layers":[...]},...]}   a DAG (NAS cells):
 *                                      node 0 is the input, node j > 0 the sum over its edges
 *                                      (i, j), i < j, of the edge's layers applied to node i
 *                                      ("layers": [] is the identity), the last node the output;
 *                                      a node without incoming edges may feed nothing
 *   The last layer must produce [B, classes]; a final "linear" with "out" omitted gets classes. */
#ifndef FEDNAS_ENGINE_NN_H
#define FEDNAS_ENGINE_NN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "engine/graph.h"

typedef struct engine_net engine_net_t;

/* A named trainable tensor: offset into the blobs and shape ("layers.0.weight", [32,1,5,5]). */
typedef struct engine_param_info {
    char name[48];
    size_t offset;
    int ndim;
    int64_t shape[4];
    int fan_in; /* for initialisation; 0 for biases and norm parameters */
} engine_param_info_t;

/* Builds the network for inputs [B, c, h, w]. Every shape is checked here, so a mismatch
 * (a conv kernel larger than its input, a linear after a conv without flatten is fine: it
 * flattens) is FN_EINVAL naming the layer path ("layers[3] (conv2d): ..."). */
int engine_net_create(const json_t *arch, int c, int h, int w, int num_classes, engine_net_t **out, err_t *err);
void engine_net_free(engine_net_t *n);
/* The architecture as its flat layer list (named types expanded; a new reference). */
int engine_net_expand(const json_t *arch, int classes, json_t **layers, err_t *err);

size_t engine_net_num_params(const engine_net_t *n);
float *engine_net_params(engine_net_t *n);
float *engine_net_grads(engine_net_t *n);
size_t engine_net_num_buffers(const engine_net_t *n);
float *engine_net_buffers(engine_net_t *n);
int engine_net_num_tensors(const engine_net_t *n);
const engine_param_info_t *engine_net_tensor(const engine_net_t *n, int i);
/* Forward FLOPs per sample (multiply-add = 2) of the linear and conv layers. */
double engine_net_flops_per_sample(const engine_net_t *n);

/* Weights He-uniform U(-sqrt(6/fan_in), +): deterministic from seed; biases and BN beta 0,
 * norm gammas 1, running variance 1. */
void engine_net_init(engine_net_t *n, uint64_t seed);

/* Logits [B, classes] for x [B, c, h, w] (or [B, c*h*w]) on graph g. training selects batch
 * statistics (and updates running ones) and active dropout. NULL on error (see graph). */
engine_tensor_t *engine_net_forward(engine_net_t *n, engine_graph_t *g, engine_tensor_t *x, int training);
/* A hook on the input of every linear and conv2d layer, in forward order (layer counts them from
 * 0 in each engine_net_forward): it returns the tensor the layer gets instead (quantization-aware
 * training fakes the int8 runtime's input quantization here, engine/qat.h). NULL removes it. */
typedef engine_tensor_t *(*engine_net_input_hook_fn)(void *ctx, engine_graph_t *g, engine_tensor_t *x, int layer,
                                                     int training);
void engine_net_set_input_hook(engine_net_t *n, engine_net_input_hook_fn fn, void *ctx);

#endif
